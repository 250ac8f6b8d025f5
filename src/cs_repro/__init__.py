"""cs_repro: a reproduction of Continuous Sparsification (Savarese, Silva, Maire, NeurIPS 2020).

Floors, each importing only the ones below it:
params -> data, models -> masks -> methods -> train -> tickets -> report -> cli.
"""

__version__ = "0.1.0"
