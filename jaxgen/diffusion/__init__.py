"""Simple diffusion (Hoogeboom et al. 2023; SiD2): schedules, losses, samplers, U-ViT."""
