"""What trains: the data module and preprocessing, the networks, and the LightningModule.

Nothing here knows of studies, trials or tracking. Import submodules directly
(`lightning_modules.networks`, `lightning_modules.training`); this file stays empty so that
importing the package, e.g. for `TabslimInputError`, does not pull in Lightning.
"""
