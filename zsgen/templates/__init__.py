"""Rendering user-edited templates where they cannot stall the process that asked (:mod:`zsgen.templates.worker`)."""
