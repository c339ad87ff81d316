"""jaxgen: scaling studies of image and video generative models in JAX/Flax."""

import setuptools

# Pinned for CPython 3.11 (jax 0.11+ needs 3.12). On a 3.12 machine only these
# pins change: the code uses APIs that jax 0.12 keeps.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "clu==0.0.12",
    # clu's metric writers import TensorFlow at import time.
    "tensorflow-cpu==2.21.0",
    "tensorboard",
    "tensorflow-datasets==4.9.10",
    "array_record",
    "ml-collections==1.1.0",
    "einops==0.8.2",
    "chex==0.1.92",
    "absl-py",
    "numpy",
    "scipy",
    "matplotlib",
    "pillow",
    # Real 8x8 digits for the R3GAN stacked-MNIST-style experiment.
    "scikit-learn",
    # PSNR / SSIM (jaxgen.eval.pixels).
    "dm-pix",
    # diffusers weight files (jaxgen.autoencoders.diffusers_compat).
    "safetensors",
]

EXTRAS_REQUIRE = {
    # scikit-image: the independent PSNR / SSIM reference of the tests.
    # submitit: the tests run sweeps through its local executor.
    "test": ["pytest", "pytest-xdist", "scikit-image", "submitit"],
    # `python -m scaling.run --executor=slurm` submits points through it.
    "cluster": ["submitit"],
    # Weight conversion (jaxgen.eval.convert) and the parity tests against
    # the reference PyTorch implementations (pytorch-fid, lpips, diffusers).
    "parity": ["torch==2.13.0", "pytorch-fid", "lpips", "diffusers"],
}

setuptools.setup(
    name="jaxgen",
    version="0.1.0",
    description="JAX/Flax library for scaling studies of generative models.",
    packages=setuptools.find_packages(include=["jaxgen*", "scaling*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
