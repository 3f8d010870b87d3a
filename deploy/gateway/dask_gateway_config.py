# dask-gateway server configuration: the cluster options JupyterHub users see for
# ampoffset-dask clusters. Load it with `dask-gateway-server -f dask_gateway_config.py`, or
# paste it into the daskhub chart as in daskhub-values.yaml (the chart defines `c`).
# Workers get one thread each and a memory limit equal to the container limit, as in
# deploy/kubernetes/daskcluster.yaml.
from dask_gateway_server.options import Float, Integer, Options, String

c = get_config()  # noqa: F821  (provided by the traitlets config loader)

AMPOFFSET_IMAGE = "ghcr.io/ampoffset-dask/ampoffset-dask:0.1.0"


def ampoffset_options_handler(options, user):
    """Turn the user's choices into dask-gateway cluster settings."""
    return {
        "image": options.image,
        "worker_cores": 1,
        "worker_threads": 1,
        "worker_memory": int(options.worker_memory_gib * 2**30),
        "scheduler_memory": int(options.scheduler_memory_gib * 2**30),
        "idle_timeout": options.idle_timeout_minutes * 60,
    }


c.Backend.cluster_options = Options(
    String("image", default=AMPOFFSET_IMAGE, label="Image"),
    Float("worker_memory_gib", default=4, min=2, max=16, label="Worker memory (GiB)"),
    Float("scheduler_memory_gib", default=2, min=1, max=8, label="Scheduler memory (GiB)"),
    Integer("idle_timeout_minutes", default=30, min=0, max=480, label="Idle timeout (minutes)"),
    handler=ampoffset_options_handler,
)
