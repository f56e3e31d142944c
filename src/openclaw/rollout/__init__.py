"""Getting a new model into production safely: the retraining pipeline (extract, train,
validate, register, package, canary; drift), and the model canary inside the service."""
