"""The training engine every recipe runs on: strategy, step, checkpoints and resume, pre-emption, logging.

Imports the model core (for rematerialisation and the weight-decay mask), never data, recipes or hub code.
"""
