"""Imports every model family so its objective registers by name.

`config.family` is looked up in `jaxgen.registry.OBJECTIVES`; importing this
module is what fills that registry.
"""

# pylint: disable=unused-import
from jaxgen.autoencoders import objective as _autoencoder
from jaxgen.diffusion import objective as _simple_diffusion
from jaxgen.gan import objective as _r3gan
from jaxgen.flow import objective as _flow
