"""The ``dealrisk`` command line (``dealrisk.cli``): the one module above training and serving."""
