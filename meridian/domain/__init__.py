"""The domain core: models, the parcel state machine, commands, events and errors.

Nothing here does I/O or knows which cloud it runs on.
"""
