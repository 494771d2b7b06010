"""The admission webhooks: the HTTPS server, the ImagePullSecret and Pod reviews."""
