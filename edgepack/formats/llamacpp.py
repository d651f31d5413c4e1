"""llama.cpp's library, loaded once and quietly: shared by the GGUF writer (its quantizer) and the runtime."""
import ctypes
import os


def _noop_log(level, text, user_data):
    pass


_LOG_CB = None  # the ctypes callback must outlive every call into llama.cpp


def quiet_llama():
    """Silence llama.cpp's stderr logging (load banners, warnings) unless EDGEPACK_DEBUG is set."""
    global _LOG_CB
    import llama_cpp

    if _LOG_CB is None:
        llama_cpp.llama_backend_init()
        if not os.environ.get("EDGEPACK_DEBUG"):
            _LOG_CB = llama_cpp.llama_log_callback(_noop_log)
            llama_cpp.llama_log_set(_LOG_CB, ctypes.c_void_p(0))
        else:
            _LOG_CB = True
    return llama_cpp
