"""Kernels compiled once as C functions and called by their address (Numba).

Numba copies a jitted callee's code into each caller's library, then optimises and compiles it again
there: a kernel called at several levels of a fit's call tree (the gathered kernels' serial and parallel
twins, the parallel one's gufunc and its two wrappers, the training steps) is processed again at each
(benchmarks/RESULTS.md, section 9). As a Numba cfunc its code is optimised and compiled once per
signature; compiled callers call it by its address, which their own callers pass as an integer, so
nothing is baked into their cached code.

A call's C arguments: each array's data pointer (the array C-contiguous) followed by its shape (intp each),
each scalar as itself (:func:`c_arguments`). The cfunc's Python body takes them in that order and views
the memory again with ``numba.carray``; :func:`c_caller` makes the intrinsic that calls such a function
and refuses, as a typing error, arguments of other types than the function was compiled for.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic


def c_arguments(argument_types) -> list:
    """The C arguments (Numba types) of a call with ``argument_types``: an array's data pointer, then its
    shape (intp each); a scalar as it is."""
    flat = []
    for t in argument_types:
        if isinstance(t, types.Array):
            flat += [types.CPointer(t.dtype)] + [types.intp] * t.ndim
        else:
            flat.append(t)
    return flat


def compile_c_function(py_func, argument_types):
    """``py_func`` (taking :func:`c_arguments` of ``argument_types``) as a Numba cfunc, compiled or loaded
    from Numba's cache. Keep the result: its code lives as long as it does."""
    signature = types.void(*c_arguments(argument_types))
    return numba.cfunc(signature, cache=True, error_model="numpy")(py_func)


def _same(given, expected) -> bool:
    if isinstance(expected, types.Array):
        return (isinstance(given, types.Array) and given.layout == "C" and given.dtype == expected.dtype
                and given.ndim == expected.ndim)
    return given == expected


def c_caller(argument_types_for):
    """An intrinsic ``call(address, *arguments)`` that calls the C function at ``address`` (an intp) on
    ``arguments`` (their :func:`c_arguments`). ``argument_types_for(dtype)``: the argument types the
    function was compiled for, given the dtype of the first array among them; other types, or an
    array that is not C-contiguous, are a typing error that names both, never a call with the wrong layout."""

    @intrinsic
    def call(typingctx, address, *arguments):
        if len(arguments) == 1 and isinstance(arguments[0], types.StarArgTuple):
            arguments = tuple(arguments[0].types)
        arrays = [a for a in arguments if isinstance(a, types.Array)]
        if not arrays or not isinstance(address, types.Integer):
            return None
        expected = tuple(argument_types_for(arrays[0].dtype))
        if len(expected) != len(arguments) or not all(map(_same, arguments, expected)):
            raise TypingError(f"a C function compiled for the arguments {expected} (arrays C-contiguous) was "
                              f"called with {arguments}: pass arrays of those dtypes, made contiguous")
        flat = c_arguments(expected)

        def codegen(context, builder, signature, args):
            address_value, packed = args
            values = []
            for t, value in zip(arguments, cgutils.unpack_tuple(builder, packed, len(arguments))):
                if isinstance(t, types.Array):
                    array = context.make_array(t)(context, builder, value)
                    values += [array.data] + cgutils.unpack_tuple(builder, array.shape, t.ndim)
                else:
                    values.append(value)
            function_type = ir.FunctionType(ir.VoidType(), [context.get_value_type(t) for t in flat])
            builder.call(builder.inttoptr(address_value, function_type.as_pointer()), values)
            return context.get_dummy_value()

        return types.void(address, types.StarArgTuple(arguments)), codegen

    return call
