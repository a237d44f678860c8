"""The DAQ config file: the one pydantic model (model.py) and the docs generated from it."""
