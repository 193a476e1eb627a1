"""Network building blocks shared by the models."""
