"""Running the pipeline's stages, kept apart from the science package `cs_repro`: several DVC stages at once
on one machine (`cs-repro parallel`) and the SLURM job arrays (`slurm/`). See docs/parallel.md."""
