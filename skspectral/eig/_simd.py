"""SIMD vectors for Numba: one LLVM vector of a float dtype as a Numba value.

Numba vectorises a loop only where LLVM can prove that its arrays do not overlap (else a
run-time check per loop entry, which costs more than the short loops of a 15 x 15 matrix
save) and leaves LLVM's SLP vectoriser off (miscompilations, numba#8852). The CPU kernel
therefore spells its vector code out: a ``Vector`` is an LLVM ``<width x dtype>`` value (a
register); ``load``/``store`` move ``width`` consecutive elements of an array's last axis
(``load_at``/``store_at``: from a flat offset of a contiguous array); the arithmetic
operators, comparisons (giving a ``Mask``), ``where``, ``sqrt``, ``absolute``, ``minimum``,
``maximum`` and ``copysign`` map to one LLVM instruction or intrinsic each, element by
element with IEEE semantics, so a lane computes exactly what scalar code with the same
operations would. Masks combine with ``&``, ``|`` and ``~``; ``any_true`` and ``all_true``
reduce them. Python numbers mixed with a vector are broadcast to it.

Width: 32 bytes of the dtype (AVX2: 4 float64 or 8 float32); on narrower hardware LLVM
splits each operation, which stays correct.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

VECTOR_BYTES = 32


class Vector(types.Type):
    """``width`` lanes of a float dtype, held as one LLVM vector."""

    def __init__(self, dtype, width: int):
        self.dtype, self.width = dtype, width
        super().__init__(name=f"Vector({dtype}, {width})")


class Mask(types.Type):
    """The result of comparing two vectors: one bit per lane."""

    def __init__(self, width: int):
        self.width = width
        super().__init__(name=f"Mask({width})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.width))


@register_model(Mask)
class _MaskModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(1), fe_type.width))


def lanes_of(dtype) -> int:
    """The vector width for a Numba float dtype."""
    return VECTOR_BYTES // (dtype.bitwidth // 8)


def _lane_pointer(context, builder, array_type, array, indices):
    """Pointer to array[indices..., 0] (indices for every axis but the last, non-negative)."""
    ary = context.make_array(array_type)(context, builder, array)
    zero = context.get_constant(types.intp, 0)
    indices = [context.cast(builder, i, t, types.intp) for i, t in indices] + [zero]
    return cgutils.get_item_pointer(context, builder, array_type, ary, indices, wraparound=False)


def _flat_pointer(context, builder, array_type, array, offset, offset_type, vtype):
    """Pointer (to a vtype) at flat element ``offset`` of a C-contiguous array: load_at's, store_at's and
    transpose_block's addressing."""
    data = context.make_array(array_type)(context, builder, array).data
    pointer = builder.gep(data, [context.cast(builder, offset, offset_type, types.intp)])
    return builder.bitcast(pointer, vtype.as_pointer())


@intrinsic
def lane_count(typingctx, array):
    """The vector width of an array's dtype (a compile-time constant)."""
    width = lanes_of(array.dtype)

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, width)

    return types.intp(array), codegen


@intrinsic
def load(typingctx, array, index):
    """array[index, :width] of an (n, width) array as a vector."""
    vector = Vector(array.dtype, lanes_of(array.dtype))

    def codegen(context, builder, sig, args):
        pointer = _lane_pointer(context, builder, sig.args[0], args[0], [(args[1], sig.args[1])])
        vp = builder.bitcast(pointer, context.get_value_type(vector).as_pointer())
        return builder.load(vp, align=array.dtype.bitwidth // 8)

    return vector(array, index), codegen


@intrinsic
def store(typingctx, array, index, value):
    """array[index, :width] = value."""

    def codegen(context, builder, sig, args):
        pointer = _lane_pointer(context, builder, sig.args[0], args[0], [(args[1], sig.args[1])])
        vp = builder.bitcast(pointer, args[2].type.as_pointer())
        builder.store(args[2], vp, align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic
def load_at(typingctx, array, offset):
    """width elements of a C-contiguous array from flat element ``offset`` on, as a vector
    (the caller keeps offset + width within the array)."""
    vector = Vector(array.dtype, lanes_of(array.dtype))

    def codegen(context, builder, sig, args):
        vp = _flat_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1],
                           context.get_value_type(vector))
        return builder.load(vp, align=array.dtype.bitwidth // 8)

    return vector(array, offset), codegen


@intrinsic
def store_at(typingctx, array, offset, value):
    """width elements of a C-contiguous array from flat element ``offset`` on = value."""

    def codegen(context, builder, sig, args):
        vp = _flat_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1], args[2].type)
        builder.store(args[2], vp, align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(array, offset, value), codegen


@intrinsic
def transpose_block(typingctx, source, offset, stride, out):
    """out (flat, width x width elements) = the transpose of the width x width block of a C-contiguous
    array whose row l is the vector at flat element offset + l stride: out's vector k holds element k
    of every row (row l in lane l). In registers: log2(width) rounds of interleaving rows l and
    l + width / 2 (LLVM shufflevector), each element moved, never computed."""
    vector = Vector(source.dtype, lanes_of(source.dtype))

    def codegen(context, builder, sig, args):
        width = vector.width
        vtype = context.get_value_type(vector)
        base = context.cast(builder, args[1], sig.args[1], types.intp)
        step = context.cast(builder, args[2], sig.args[2], types.intp)
        rows = []
        for lane in range(width):
            at = builder.add(base, builder.mul(step, context.get_constant(types.intp, lane)))
            rows.append(builder.load(_flat_pointer(context, builder, sig.args[0], args[0], at, types.intp, vtype),
                                     align=source.dtype.bitwidth // 8))
        half = width // 2
        # lanes 0, w, 1, w + 1, ... of (a, b): their first halves interleaved; then their second halves
        low = ir.Constant(ir.VectorType(ir.IntType(32), width),
                          [i // 2 + (width if i % 2 else 0) for i in range(width)])
        high = ir.Constant(ir.VectorType(ir.IntType(32), width),
                           [half + i // 2 + (width if i % 2 else 0) for i in range(width)])
        rounds = width.bit_length() - 1
        for _ in range(rounds):
            rows = [builder.shuffle_vector(rows[i], rows[i + half], mask) for i in range(half) for mask in (low, high)]
        for k in range(width):
            at = context.get_constant(types.intp, k * width)
            builder.store(rows[k], _flat_pointer(context, builder, sig.args[3], args[3], at, types.intp, vtype),
                          align=source.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(source, offset, stride, out), codegen


@intrinsic
def splat(typingctx, like, value):
    """value in every lane of a vector of like's dtype (like: an array or a vector)."""
    vector = like if isinstance(like, Vector) else Vector(like.dtype, lanes_of(like.dtype))

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[1], sig.args[1], vector.dtype)
        vtype = context.get_value_type(vector)
        one = builder.insert_element(ir.Constant(vtype, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, ir.Constant(vtype, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), vector.width), [0] * vector.width))

    return vector(like, value), codegen


def _elementwise(emit, arity: int):
    """An intrinsic of 1 or 2 operands of one type giving that type; emit(builder, operand type,
    args) makes its LLVM value."""
    if arity == 1:
        @intrinsic
        def unary(typingctx, a):
            return a(a), lambda context, builder, sig, args: emit(builder, a, args)

        return unary

    @intrinsic
    def binary(typingctx, a, b):
        return a(a, b), lambda context, builder, sig, args: emit(builder, a, args)

    return binary


def _instruction_intrinsic(instruction: str, arity: int):
    """One LLVM instruction (an IRBuilder method) on 1 or 2 operands."""
    return _elementwise(lambda builder, operand, args: getattr(builder, instruction)(*args), arity)


def _llvm_function(builder, name: str, vector, arity: int):
    """The LLVM intrinsic llvm.<name> on vectors of this type."""
    vtype = ir.VectorType(ir.DoubleType() if vector.dtype.bitwidth == 64 else ir.FloatType(), vector.width)
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * arity),
                                          f"llvm.{name}.v{vector.width}f{vector.dtype.bitwidth}")


def _llvm_call(name: str, arity: int):
    """llvm.<name> called on 1 or 2 vectors of one type."""
    return _elementwise(lambda builder, operand, args: builder.call(_llvm_function(builder, name, operand, arity),
                                                                     args), arity)


def _compare_intrinsic(op: str):
    @intrinsic
    def compare(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return builder.fcmp_ordered(op, *args)

        return Mask(a.width)(a, b), codegen

    return compare


_ARITHMETIC = {operator.add: _instruction_intrinsic("fadd", 2), operator.sub: _instruction_intrinsic("fsub", 2),
               operator.mul: _instruction_intrinsic("fmul", 2), operator.truediv: _instruction_intrinsic("fdiv", 2)}
_COMPARISON = {operator.lt: _compare_intrinsic("<"), operator.le: _compare_intrinsic("<="),
               operator.gt: _compare_intrinsic(">"), operator.ge: _compare_intrinsic(">="),
               operator.eq: _compare_intrinsic("=="), operator.ne: _compare_intrinsic("!=")}
_sqrt, _fabs, _copysign = _llvm_call("sqrt", 1), _llvm_call("fabs", 1), _llvm_call("copysign", 2)
# operators on one type only: negation of a vector; and, or, not of masks
_SAME_TYPE = {operator.neg: (Vector, "fneg", 1), operator.invert: (Mask, "not_", 1),
              operator.or_: (Mask, "or_", 2), operator.and_: (Mask, "and_", 2)}


def _as_vectors(a, b):
    """How to broadcast a Python number against a vector: (vector a, vector b) -> impl args."""
    if isinstance(a, Vector) and isinstance(b, Vector):
        return "vv"
    if isinstance(a, Vector) and isinstance(b, types.Number):
        return "vn"
    if isinstance(a, types.Number) and isinstance(b, Vector):
        return "nv"
    return None


def _register_binary(op, impl):
    @overload(op)
    def _overload(a, b):
        kind = _as_vectors(a, b)
        if kind == "vv":
            return lambda a, b: impl(a, b)
        if kind == "vn":
            return lambda a, b: impl(a, splat(a, b))
        if kind == "nv":
            return lambda a, b: impl(splat(b, a), b)
        return None


for _op, _impl in {**_ARITHMETIC, **_COMPARISON}.items():
    _register_binary(_op, _impl)


def _register_same_type(op, kind, instruction: str, arity: int):
    impl = _instruction_intrinsic(instruction, arity)
    if arity == 1:
        @overload(op)
        def _unary(a):
            if isinstance(a, kind):
                return lambda a: impl(a)
            return None

        return

    @overload(op)
    def _binary(a, b):
        if isinstance(a, kind) and isinstance(b, kind):
            return lambda a, b: impl(a, b)
        return None


for _op, (_kind, _instruction, _arity) in _SAME_TYPE.items():
    _register_same_type(_op, _kind, _instruction, _arity)


@intrinsic
def all_true(typingctx, mask):
    """Whether every lane of the mask is set."""

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], ir.IntType(mask.width))
        return builder.icmp_unsigned("==", bits, ir.Constant(ir.IntType(mask.width), (1 << mask.width) - 1))

    return types.boolean(mask), codegen


@intrinsic
def largest_lane(typingctx, a):
    """The largest of a vector's lanes (as Python's max over them in order; no NaN expected)."""

    def codegen(context, builder, sig, args):
        best = builder.extract_element(args[0], ir.Constant(ir.IntType(32), 0))
        for i in range(1, a.width):
            value = builder.extract_element(args[0], ir.Constant(ir.IntType(32), i))
            best = builder.select(builder.fcmp_ordered(">", value, best), value, best)
        return best

    return a.dtype(a), codegen


@intrinsic
def where(typingctx, mask, a, b):
    """a where mask is set, else b, lane by lane (a and b vectors)."""

    def codegen(context, builder, sig, args):
        return builder.select(*args)

    return a(mask, a, b), codegen


@intrinsic
def any_true(typingctx, mask):
    """Whether any lane of the mask is set."""

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], ir.IntType(mask.width))
        return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(mask.width), 0))

    return types.boolean(mask), codegen


def sqrt(a):
    """Lane-wise square root (correctly rounded, as math.sqrt)."""


def absolute(a):
    """Lane-wise |a|."""


def copysign(a, b):
    """Lane-wise |a| with the sign of b."""


def minimum(a, b):
    """Lane-wise min(a, b) as Python's min: b where b < a, else a (b may be a number)."""


def maximum(a, b):
    """Lane-wise max(a, b) as Python's max: b where b > a, else a (b may be a number)."""


@overload(sqrt)
def _sqrt_overload(a):
    return lambda a: _sqrt(a)


@overload(absolute)
def _abs_overload(a):
    return lambda a: _fabs(a)


@overload(copysign)
def _copysign_overload(a, b):
    if isinstance(b, types.Number):
        return lambda a, b: _copysign(a, splat(a, b))
    return lambda a, b: _copysign(a, b)


@overload(minimum)
def _minimum_overload(a, b):
    if isinstance(b, types.Number):
        return lambda a, b: minimum(a, splat(a, b))
    return lambda a, b: where(b < a, b, a)


@overload(maximum)
def _maximum_overload(a, b):
    if isinstance(b, types.Number):
        return lambda a, b: maximum(a, splat(a, b))
    return lambda a, b: where(b > a, b, a)
