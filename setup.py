"""Only the optional compiled parts; everything else is in pyproject.toml.

``cdc/pgoutput/_speedups.c`` holds compiled twins of the decoder's per-column loops and
``catalog/_speedups.c`` the envelope builder's fast paths (canonical payloads, event ids).

The modules of the per-event path (:data:`COMPILED`) are also compiled, unchanged, by Cython:
the same source, without the interpreter's per-bytecode dispatch (pydantic 1 shipped its
pure-Python modules the same way). The extension module lands beside its ``.py`` and is
imported in its place unless the source is more than 2 s newer; a source edited since the
build is imported as source again, with a warning (``cdc/_compiled.py``).

Everything compiled is optional: without a C compiler, or without Cython, the build goes on
and the pure-Python code runs (``CDC_NO_SPEEDUPS=1`` runs it on a full build too;
``CDC_NO_CYTHON=1`` skips the Cython step of a build).
"""

import os

from setuptools import Extension, setup

#: The modules every row change or event passes through, compiled by Cython when it is there.
COMPILED = [
    "cdc/assembler.py",
    "cdc/pgoutput/decoder.py",
    "cdc/state.py",
    "cdc/stream.py",
    "cdc/values.py",
    "cdc/watch.py",
    "cdc/sinks/memory.py",
    "catalog/envelope.py",
    "derivers/base.py",
    "derivers/ticket_bundles.py",
    "derivers/ticket_comments.py",
    "derivers/ticket_sla.py",
    "derivers/tickets.py",
    "derivers/time_entries.py",
]


def cython_extensions() -> list[Extension]:
    if os.environ.get("CDC_NO_CYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    extensions = [
        Extension(path[:-3].replace("/", "."), [path], optional=True, extra_compile_args=["-O2"])
        for path in COMPILED
    ]
    try:
        return cythonize(
            extensions,
            # Python semantics exactly: annotations are documentation, not C types.
            compiler_directives={"language_level": 3, "annotation_typing": False, "binding": True},
            build_dir="build/cython",  # the generated C, out of the source tree
            quiet=True,
        )
    except Exception as exc:  # optional, like the C extensions: the source runs instead
        print(f"warning: Cython could not compile the per-event modules ({exc}); using the source")
        return []


setup(
    ext_modules=[
        Extension(
            "cdc.pgoutput._speedups",
            ["cdc/pgoutput/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "catalog._speedups",
            ["catalog/_speedups.c"],
            libraries=["crypto"],  # SHA-1 of OpenSSL, as hashlib's
            optional=True,
            extra_compile_args=["-O2"],
        ),
        *cython_extensions(),
    ],
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
