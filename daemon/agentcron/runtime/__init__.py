"""The runtime: the deployment service, the scheduler loop and the firing path."""
