using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

using IlgpuLlama.Kernels;

namespace IlgpuLlama.Safetensors;

/// <summary>
/// How many values a narrowing conversion could not represent faithfully, so the loader can warn
/// that a checkpoint does not fit the device type. Counts add up across chunks with <c>+</c>.
/// </summary>
/// <param name="Overflows">Finite inputs that became ±infinity.</param>
/// <param name="FlushedToZero">Non-zero finite inputs that became ±0.</param>
/// <param name="Subnormals">Results that are subnormal and so carry fewer significant bits.</param>
public readonly record struct ConversionStats(long Overflows, long FlushedToZero, long Subnormals)
{
    /// <summary>True when some values overflowed or vanished, i.e. the conversion changed more than rounding.</summary>
    public bool LostRange => Overflows != 0 || FlushedToZero != 0;

    /// <summary>Sums the counts of two chunks.</summary>
    public static ConversionStats operator +(ConversionStats a, ConversionStats b) =>
        new(a.Overflows + b.Overflows, a.FlushedToZero + b.FlushedToZero, a.Subnormals + b.Subnormals);
}

/// <summary>
/// Bit-exact float conversions between the checkpoint dtypes and the device weight types, all with
/// IEEE round-to-nearest-even. These run over gigabytes at load time, so each is one branch-free
/// <see cref="Vector{T}"/> kernel (the tail goes through the same kernel via a padded buffer, so
/// there is no second scalar implementation to drift). Results match <see cref="Half"/> bit for bit,
/// NaN payloads included. Inputs and outputs are in host (little-endian) order.
/// </summary>
public static class DTypeConversion
{
    private static readonly int IntLanes = Vector<int>.Count;
    private static readonly int ShortLanes = Vector<ushort>.Count;

    /// <summary>bfloat16 → float16. Values beyond ±65504 (after rounding) become ±inf and are counted.</summary>
    public static ConversionStats BF16ToF16(ReadOnlySpan<ushort> src, Span<ushort> dst)
    {
        CheckLengths(src.Length, dst.Length);
        Vector<int> ovf = default, ftz = default, subn = default;
        int i = 0;
        ref ushort s = ref MemoryMarshal.GetReference(src);
        ref ushort d = ref MemoryMarshal.GetReference(dst);
        for (; i <= src.Length - ShortLanes; i += ShortLanes)
            Vector.StoreUnsafe(BF16ToF16Block(Vector.LoadUnsafe(ref s, (nuint)i), ref ovf, ref ftz, ref subn), ref d, (nuint)i);
        if (i < src.Length)
        {
            Span<ushort> tmp = stackalloc ushort[ShortLanes];
            tmp.Clear();
            src[i..].CopyTo(tmp);
            BF16ToF16Block(new Vector<ushort>(tmp), ref ovf, ref ftz, ref subn).CopyTo(tmp);
            tmp[..(src.Length - i)].CopyTo(dst[i..]);
        }
        return ToStats(ovf, ftz, subn);
    }

    /// <summary>float32 → float16, counting overflows, flushes to zero and subnormal results.</summary>
    public static ConversionStats F32ToF16(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        CheckLengths(src.Length, dst.Length);
        Vector<int> ovf = default, ftz = default, subn = default;
        int i = 0;
        ref int s = ref Unsafe.As<float, int>(ref MemoryMarshal.GetReference(src));
        ref ushort d = ref MemoryMarshal.GetReference(dst);
        for (; i <= src.Length - ShortLanes; i += ShortLanes)
        {
            var lo = F32BitsToF16Bits(Vector.LoadUnsafe(ref s, (nuint)i), ref ovf, ref ftz, ref subn);
            var hi = F32BitsToF16Bits(Vector.LoadUnsafe(ref s, (nuint)(i + IntLanes)), ref ovf, ref ftz, ref subn);
            Vector.StoreUnsafe(Vector.Narrow(Vector.AsVectorUInt32(lo), Vector.AsVectorUInt32(hi)), ref d, (nuint)i);
        }
        if (i < src.Length)
        {
            Span<int> tmp = stackalloc int[ShortLanes];
            tmp.Clear();
            MemoryMarshal.Cast<float, int>(src[i..]).CopyTo(tmp);
            var lo = F32BitsToF16Bits(new Vector<int>(tmp), ref ovf, ref ftz, ref subn);
            var hi = F32BitsToF16Bits(new Vector<int>(tmp[IntLanes..]), ref ovf, ref ftz, ref subn);
            Span<ushort> outTmp = stackalloc ushort[ShortLanes];
            Vector.Narrow(Vector.AsVectorUInt32(lo), Vector.AsVectorUInt32(hi)).CopyTo(outTmp);
            outTmp[..(src.Length - i)].CopyTo(dst[i..]);
        }
        return ToStats(ovf, ftz, subn);
    }

    /// <summary>float32 → bfloat16 with round-to-nearest-even; NaNs stay NaN (quiet, sign and top payload kept).</summary>
    public static ConversionStats F32ToBF16(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        CheckLengths(src.Length, dst.Length);
        Vector<int> ovf = default, ftz = default, subn = default;
        int i = 0;
        ref uint s = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(src));
        ref ushort d = ref MemoryMarshal.GetReference(dst);
        for (; i <= src.Length - ShortLanes; i += ShortLanes)
        {
            var lo = F32BitsToBF16Bits(Vector.LoadUnsafe(ref s, (nuint)i), ref ovf, ref ftz, ref subn);
            var hi = F32BitsToBF16Bits(Vector.LoadUnsafe(ref s, (nuint)(i + IntLanes)), ref ovf, ref ftz, ref subn);
            Vector.StoreUnsafe(Vector.Narrow(lo, hi), ref d, (nuint)i);
        }
        if (i < src.Length)
        {
            Span<uint> tmp = stackalloc uint[ShortLanes];
            tmp.Clear();
            MemoryMarshal.Cast<float, uint>(src[i..]).CopyTo(tmp);
            var lo = F32BitsToBF16Bits(new Vector<uint>(tmp), ref ovf, ref ftz, ref subn);
            var hi = F32BitsToBF16Bits(new Vector<uint>(tmp[IntLanes..]), ref ovf, ref ftz, ref subn);
            Span<ushort> outTmp = stackalloc ushort[ShortLanes];
            Vector.Narrow(lo, hi).CopyTo(outTmp);
            outTmp[..(src.Length - i)].CopyTo(dst[i..]);
        }
        return ToStats(ovf, ftz, subn);
    }

    /// <summary>float16 → float32 (exact; signalling NaNs are quieted as <see cref="Half"/> does).</summary>
    public static void F16ToF32(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        CheckLengths(src.Length, dst.Length);
        int i = 0;
        ref ushort s = ref MemoryMarshal.GetReference(src);
        ref uint d = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(dst));
        for (; i <= src.Length - ShortLanes; i += ShortLanes)
        {
            Vector.Widen(Vector.LoadUnsafe(ref s, (nuint)i), out var lo, out var hi);
            Vector.StoreUnsafe(F16BitsToF32Bits(lo), ref d, (nuint)i);
            Vector.StoreUnsafe(F16BitsToF32Bits(hi), ref d, (nuint)(i + IntLanes));
        }
        for (; i < src.Length; i++) dst[i] = (float)BitConverter.UInt16BitsToHalf(src[i]);
    }

    /// <summary>bfloat16 → float32 (exact: bfloat16 is the top half of a float32).</summary>
    public static void BF16ToF32(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        CheckLengths(src.Length, dst.Length);
        int i = 0;
        ref ushort s = ref MemoryMarshal.GetReference(src);
        ref uint d = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(dst));
        for (; i <= src.Length - ShortLanes; i += ShortLanes)
        {
            Vector.Widen(Vector.LoadUnsafe(ref s, (nuint)i), out var lo, out var hi);
            Vector.StoreUnsafe(Vector.ShiftLeft(lo, 16), ref d, (nuint)i);
            Vector.StoreUnsafe(Vector.ShiftLeft(hi, 16), ref d, (nuint)(i + IntLanes));
        }
        for (; i < src.Length; i++) dst[i] = BitConverter.UInt32BitsToSingle((uint)src[i] << 16);
    }

    /// <summary>
    /// float16 → bfloat16. Never overflows or flushes (bfloat16 has the wider exponent range);
    /// the 10-bit mantissa is rounded to 7 bits, nearest-even.
    /// </summary>
    public static void F16ToBF16(ReadOnlySpan<ushort> src, Span<ushort> dst)
    {
        CheckLengths(src.Length, dst.Length);
        Vector<int> ovf = default, ftz = default, subn = default;
        int i = 0;
        ref ushort s = ref MemoryMarshal.GetReference(src);
        ref ushort d = ref MemoryMarshal.GetReference(dst);
        for (; i <= src.Length - ShortLanes; i += ShortLanes)
            Vector.StoreUnsafe(F16ToBF16Block(Vector.LoadUnsafe(ref s, (nuint)i), ref ovf, ref ftz, ref subn), ref d, (nuint)i);
        if (i < src.Length)
        {
            Span<ushort> tmp = stackalloc ushort[ShortLanes];
            tmp.Clear();
            src[i..].CopyTo(tmp);
            F16ToBF16Block(new Vector<ushort>(tmp), ref ovf, ref ftz, ref subn).CopyTo(tmp);
            tmp[..(src.Length - i)].CopyTo(dst[i..]);
        }
    }

    /// <summary>Raw little-endian checkpoint bytes of a BF16, F16 or F32 tensor as float32 (exact).</summary>
    public static void ToF32(ReadOnlySpan<byte> src, SafetensorsDType srcType, Span<float> dst)
    {
        switch (srcType)
        {
            case SafetensorsDType.BF16:
                BF16ToF32(MemoryMarshal.Cast<byte, ushort>(src), dst);
                break;
            case SafetensorsDType.F16:
                F16ToF32(MemoryMarshal.Cast<byte, ushort>(src), dst);
                break;
            case SafetensorsDType.F32:
                MemoryMarshal.Cast<byte, float>(src).CopyTo(dst);
                break;
            default:
                throw new NotSupportedException("only BF16, F16 and F32 tensors can be converted to float32");
        }
    }

    /// <summary>
    /// Index of the first NaN or infinity in raw checkpoint bytes of a BF16, F16 or F32 tensor, or -1
    /// when every value is finite (an all-ones exponent field; checked a vector at a time).
    /// </summary>
    public static long FirstNonFinite(ReadOnlySpan<byte> src, SafetensorsDType srcType)
    {
        if (srcType == SafetensorsDType.F32)
            return FirstWithAllOnes(MemoryMarshal.Cast<byte, uint>(src), 0x7F800000u);
        if (srcType is SafetensorsDType.BF16 or SafetensorsDType.F16)
            return FirstWithAllOnes(MemoryMarshal.Cast<byte, ushort>(src), srcType == SafetensorsDType.BF16 ? (ushort)0x7F80 : (ushort)0x7C00);
        throw new NotSupportedException("only BF16, F16 and F32 tensors can be checked");
    }

    private static long FirstWithAllOnes<T>(ReadOnlySpan<T> bits, T exponentMask)
        where T : unmanaged, IEquatable<T>, System.Numerics.IBitwiseOperators<T, T, T>
    {
        var mask = new Vector<T>(exponentMask);
        int lanes = Vector<T>.Count, i = 0;
        ref T b = ref MemoryMarshal.GetReference(bits);
        for (; i <= bits.Length - lanes; i += lanes)
        {
            if (Vector.EqualsAny(Vector.LoadUnsafe(ref b, (nuint)i) & mask, mask))
                break;
        }
        for (; i < bits.Length; i++)
        {
            if ((bits[i] & exponentMask).Equals(exponentMask))
                return i;
        }
        return -1;
    }

    /// <summary>
    /// Converts raw little-endian checkpoint bytes of <paramref name="srcType"/> into the device type,
    /// writing <c>src.Length / SizeOf(srcType)</c> elements to the start of <paramref name="dst"/>.
    /// Same-type input is copied.
    /// </summary>
    /// <exception cref="ArgumentException">Source length not a whole number of elements, or destination too short.</exception>
    /// <exception cref="NotSupportedException">The source dtype is <see cref="SafetensorsDType.Other"/>.</exception>
    public static ConversionStats Convert(ReadOnlySpan<byte> src, SafetensorsDType srcType, Span<ushort> dst, SixteenBitFormat dstType)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; big-endian hosts are not supported");
        if (srcType == SafetensorsDType.Other)
            throw new NotSupportedException("only BF16, F16 and F32 tensors can be converted to a device weight type");
        int size = srcType.SizeOf();
        if (src.Length % size != 0)
            throw new ArgumentException($"{src.Length} bytes is not a whole number of {srcType.ToName()} elements", nameof(src));
        int count = src.Length / size;
        if (dst.Length < count)
            throw new ArgumentException($"destination holds {dst.Length} elements but the source has {count}", nameof(dst));
        dst = dst[..count];

        bool toFp16 = dstType == WeightFormat.Fp16;
        if (!toFp16 && dstType != WeightFormat.Bf16)
            throw new ArgumentOutOfRangeException(nameof(dstType), dstType, "unknown 16-bit device weight format");
        switch (srcType)
        {
            case SafetensorsDType.BF16 when !toFp16:
            case SafetensorsDType.F16 when toFp16:
                MemoryMarshal.Cast<byte, ushort>(src).CopyTo(dst);
                return default;
            case SafetensorsDType.BF16:
                return BF16ToF16(MemoryMarshal.Cast<byte, ushort>(src), dst);
            case SafetensorsDType.F16:
                F16ToBF16(MemoryMarshal.Cast<byte, ushort>(src), dst);
                return default;
            case SafetensorsDType.F32 when toFp16:
                return F32ToF16(MemoryMarshal.Cast<byte, float>(src), dst);
            default:
                return F32ToBF16(MemoryMarshal.Cast<byte, float>(src), dst);
        }
    }

    private static void CheckLengths(int src, int dst)
    {
        if (dst < src)
            throw new ArgumentException($"destination holds {dst} elements but the source has {src}", nameof(dst));
    }

    // Counters are per-lane Vector<int> locals (not a struct passed by ref) so the JIT keeps them in
    // registers; each lane subtracts an all-ones mask, i.e. adds 1, and can count at most one per element.
    private static ConversionStats ToStats(Vector<int> ovf, Vector<int> ftz, Vector<int> subn) =>
        new(Sum(ovf), Sum(ftz), Sum(subn));

    private static long Sum(Vector<int> v)
    {
        long total = 0;
        for (int i = 0; i < Vector<int>.Count; i++) total += v[i];
        return total;
    }

    // The 16→16-bit blocks treat each 32-bit lane as a pair of elements (even one in the low half,
    // little-endian) and convert the two halves separately, which keeps the output in place and avoids
    // the cross-lane shuffles that widening and narrowing cost.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<ushort> BF16ToF16Block(Vector<ushort> v, ref Vector<int> ovf, ref Vector<int> ftz, ref Vector<int> subn)
    {
        var pair = Vector.AsVectorInt32(v);
        var even = F32BitsToF16Bits(Vector.ShiftLeft(pair, 16), ref ovf, ref ftz, ref subn);
        var odd = F32BitsToF16Bits(pair & new Vector<int>(unchecked((int)0xFFFF0000)), ref ovf, ref ftz, ref subn);
        return Vector.AsVectorUInt16(even | Vector.ShiftLeft(odd, 16));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<ushort> F16ToBF16Block(Vector<ushort> v, ref Vector<int> ovf, ref Vector<int> ftz, ref Vector<int> subn)
    {
        var pair = Vector.AsVectorUInt32(v);
        var even = F32BitsToBF16Bits(F16BitsToF32Bits(pair & new Vector<uint>(0xFFFF)), ref ovf, ref ftz, ref subn);
        var odd = F32BitsToBF16Bits(F16BitsToF32Bits(Vector.ShiftRightLogical(pair, 16)), ref ovf, ref ftz, ref subn);
        return Vector.AsVectorUInt16(even | Vector.ShiftLeft(odd, 16));
    }

    /// <summary>
    /// float32 bits → float16 bits (in the low 16 bits of each lane), round-to-nearest-even.
    /// Normal results round by adding 0xFFF plus the kept mantissa's low bit before truncating;
    /// subnormal results let the FPU do the rounding by adding 0.5f, which aligns the
    /// surviving bits at the bottom of the float32 mantissa. (After F. Giesen's float_to_half_fast3_rtne.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<int> F32BitsToF16Bits(Vector<int> x, ref Vector<int> ovf, ref Vector<int> ftz, ref Vector<int> subn)
    {
        var sign = x & new Vector<int>(unchecked((int)0x80000000));
        var a = x ^ sign; // |x| bits; non-negative, so signed compares are exact

        var isNaN = Vector.GreaterThan(a, new Vector<int>(0x7F800000));
        // Quiet NaN keeping the top 9 payload bits, exactly as System.Half does.
        var nanBits = new Vector<int>(0x7E00) | Vector.ShiftRightLogical(a, 13);
        var infNaN = Vector.ConditionalSelect(isNaN, nanBits & new Vector<int>(0x7FFF), new Vector<int>(0x7C00));

        var sub = Vector.AsVectorInt32(Vector.AsVectorSingle(a) + new Vector<float>(0.5f)) - new Vector<int>(0x3F000000);

        var odd = Vector.ShiftRightLogical(a, 13) & Vector<int>.One;
        var norm = Vector.ShiftRightLogical(a + new Vector<int>(((15 - 127) << 23) + 0xFFF) + odd, 13);

        var big = Vector.GreaterThanOrEqual(a, new Vector<int>(0x47800000)); // ≥ 65536: inf or NaN whatever the rounding
        var small = Vector.LessThan(a, new Vector<int>(0x38800000)); // < 2^-14: subnormal or zero result
        var r = Vector.ConditionalSelect(big, infNaN, Vector.ConditionalSelect(small, sub, norm));

        var finite = Vector.LessThan(a, new Vector<int>(0x7F800000));
        var nonZeroFinite = finite & ~Vector.Equals(a, Vector<int>.Zero);
        ovf -= finite & Vector.Equals(r, new Vector<int>(0x7C00));
        ftz -= nonZeroFinite & Vector.Equals(r, Vector<int>.Zero);
        subn -= Vector.GreaterThan(r, Vector<int>.Zero) & Vector.LessThan(r, new Vector<int>(0x400));

        return r | Vector.ShiftRightLogical(sign, 16);
    }

    /// <summary>float32 bits → bfloat16 bits (low 16 bits of each lane), round-to-nearest-even, NaN kept quiet.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<uint> F32BitsToBF16Bits(Vector<uint> x, ref Vector<int> ovf, ref Vector<int> ftz, ref Vector<int> subn)
    {
        var a = Vector.AsVectorInt32(x & new Vector<uint>(0x7FFFFFFF));
        var isNaN = Vector.GreaterThan(a, new Vector<int>(0x7F800000));
        var rounded = Vector.ShiftRightLogical(x + new Vector<uint>(0x7FFF) + (Vector.ShiftRightLogical(x, 16) & Vector<uint>.One), 16);
        // Truncating a NaN whose payload sits in the low bits would make it infinity; setting the quiet bit keeps it a NaN.
        var nan = Vector.ShiftRightLogical(x, 16) | new Vector<uint>(0x40);
        var r = Vector.ConditionalSelect(Vector.AsVectorUInt32(isNaN), nan, rounded);

        var mag = Vector.AsVectorInt32(r & new Vector<uint>(0x7FFF));
        var finite = Vector.LessThan(a, new Vector<int>(0x7F800000));
        ovf -= finite & Vector.Equals(mag, new Vector<int>(0x7F80));
        ftz -= finite & ~Vector.Equals(a, Vector<int>.Zero) & Vector.Equals(mag, Vector<int>.Zero);
        subn -= Vector.GreaterThan(mag, Vector<int>.Zero) & Vector.LessThan(mag, new Vector<int>(0x80));
        return r;
    }

    /// <summary>
    /// float16 bits (low 16 bits of each lane) → float32 bits. Rebias the exponent; subnormals are
    /// renormalised by an exact float subtraction; inf/NaN get the top exponent and NaNs the quiet bit.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<uint> F16BitsToF32Bits(Vector<uint> h)
    {
        var o = Vector.ShiftLeft(h & new Vector<uint>(0x7FFF), 13);
        var exp = o & new Vector<uint>(0x0F800000);
        o += new Vector<uint>((127 - 15) << 23);

        var isInfNaN = Vector.Equals(exp, new Vector<uint>(0x0F800000));
        var isNaN = isInfNaN & ~Vector.Equals(h & new Vector<uint>(0x3FF), Vector<uint>.Zero);
        var infNaN = (o + new Vector<uint>((128 - 16) << 23)) | (isNaN & new Vector<uint>(0x00400000));

        var isSub = Vector.Equals(exp, Vector<uint>.Zero);
        var sub = Vector.AsVectorUInt32(Vector.AsVectorSingle(o + new Vector<uint>(1u << 23)) - new Vector<float>(BitConverter.UInt32BitsToSingle(113u << 23)));

        var r = Vector.ConditionalSelect(isInfNaN, infNaN, Vector.ConditionalSelect(isSub, sub, o));
        return r | Vector.ShiftLeft(h & new Vector<uint>(0x8000), 16);
    }
}
