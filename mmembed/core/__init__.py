"""The core every other layer builds on: types, the family contract, preprocessing, the numeric gate.

Plain Python, numpy, Pillow and tokenizers: no Triton, no client, no torch at import.
"""
