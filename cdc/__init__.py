"""cdc package."""

from cdc._compiled import install as _install_compiled_finder

_install_compiled_finder()  # before any module Cython may have compiled is imported
