"""Input pipelines: grain over TFDS, embedded shapes, image folders, arrays.

The trainer needs only `build_input` and the config helpers re-exported here;
`jaxgen.data.shapes` holds the embedded TFDS builder.
"""

from jaxgen.data.config import default_dataset_config
from jaxgen.data.config import parse_spec
from jaxgen.data.config import validate_dataset_config
from jaxgen.data.pipeline import build_input
from jaxgen.data.pipeline import DatasetInfo
