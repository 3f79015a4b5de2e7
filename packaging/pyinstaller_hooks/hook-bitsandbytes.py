# Replaces the contributed hook for the CPU bundle: only bitsandbytes' CPU kernels. Its CUDA, ROCm and
# XPU libraries (about 140 MB, and they need GPU runtimes a CPU bundle does not have) stay out.
from PyInstaller.utils.hooks import collect_dynamic_libs

binaries = [(src, dest) for src, dest in collect_dynamic_libs("bitsandbytes")
            if "libbitsandbytes_cpu" in src.rsplit("/", 1)[-1]]
module_collection_mode = "pyz+py"
