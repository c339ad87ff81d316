"""jaxgen: scaling studies of image and video generative models."""
