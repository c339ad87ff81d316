"""R3GAN: RpGAN loss with R1 + R2, ResNeXt-style generator and discriminator."""
