using System.Runtime.InteropServices;
using IlgpuLlama.Safetensors;

using IlgpuLlama.Kernels;

namespace IlgpuLlama.Tests.Safetensors;

public class DTypeConversionTests
{
    private static ushort HalfBits(float f) => BitConverter.HalfToUInt16Bits((Half)f);

    private static float Bf16(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);

    private static bool IsF16Subnormal(ushort h) => (h & 0x7C00) == 0 && (h & 0x3FF) != 0;

    /// <summary>
    /// Independent float32 → bfloat16 reference: pick the nearer of the two neighbouring bfloat16
    /// values by exact double arithmetic (infinity acting as 2^128 for rounding), ties to even.
    /// </summary>
    private static ushort RefBF16(float f)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((bits >> 16) | 0x40);
        ushort low = (ushort)(bits >> 16);
        if ((bits & 0xFFFF) == 0) return low;
        ushort high = (ushort)(low + 1);
        static double Mag(ushort b) => (b & 0x7FFF) == 0x7F80 ? Math.Pow(2, 128) : Math.Abs((double)Bf16(b));
        double x = Math.Abs((double)f);
        double dLow = x - Mag(low), dHigh = Mag(high) - x;
        if (dLow < dHigh) return low;
        if (dHigh < dLow) return high;
        return (low & 1) == 0 ? low : high;
    }

    private static readonly float[] F32Edges =
    [
        0f, -0f, 1f, -1f, float.PositiveInfinity, float.NegativeInfinity, BitConverter.UInt32BitsToSingle(0x7FC00000), BitConverter.UInt32BitsToSingle(0xFFC00000),
        BitConverter.UInt32BitsToSingle(0x7F800001), BitConverter.UInt32BitsToSingle(0xFFC12345), BitConverter.UInt32BitsToSingle(0x7FBFFFFF),
        float.MaxValue, float.MinValue, float.Epsilon, -float.Epsilon, 1.17549435e-38f /* min normal */,
        65504f, -65504f, 65519.996f, 65520f, 65536f, 1e5f, -1e5f,
        6.1035156e-05f /* f16 min normal 2^-14 */, 6.1035152e-05f, 5.9604645e-08f /* f16 min subnormal 2^-24 */,
        2.9802322e-08f /* 2^-25: tie with zero → 0 */, 2.9802326e-08f, 8.940697e-08f /* 3*2^-25: tie → 2^-23 */,
        1.00048828125f /* 1+2^-11: tie → 1 */, 1.00146484375f /* 1+3*2^-11: tie → up */, 1.0009765625f,
        1.00390625f /* 1+2^-8: bf16 tie → 1 */, 1.01171875f /* 1+3*2^-8: bf16 tie → up */,
        3.3895314e38f /* bf16 max 0x7F7F */, 3.3961776e38f /* between bf16 max and 2^128 */,
        9.1835e-41f /* bf16 subnormal range */, 1.4e-44f, 3.14159265f, -2.7182817f, 1e-7f, -1e-9f,
    ];

    [Fact]
    public void BF16ToF16_matches_System_Half_for_every_bf16_value()
    {
        var src = new ushort[65536];
        for (int i = 0; i < src.Length; i++) src[i] = (ushort)i;
        var dst = new ushort[src.Length];
        var stats = DTypeConversion.BF16ToF16(src, dst);

        long ovf = 0, ftz = 0, sub = 0;
        for (int i = 0; i < src.Length; i++)
        {
            float f = Bf16(src[i]);
            ushort expected = HalfBits(f);
            Assert.True(expected == dst[i], $"bf16 0x{src[i]:X4} ({f:R}): expected f16 0x{expected:X4}, got 0x{dst[i]:X4}");
            if (float.IsFinite(f) && Half.IsInfinity((Half)f)) ovf++;
            if (f != 0 && float.IsFinite(f) && (expected & 0x7FFF) == 0) ftz++;
            if (IsF16Subnormal(expected)) sub++;
        }
        Assert.Equal(new ConversionStats(ovf, ftz, sub), stats);
        Assert.True(ovf > 0 && ftz > 0 && sub > 0);
    }

    [Fact]
    public void F16ToF32_matches_System_Half_for_every_f16_value()
    {
        var src = new ushort[65536];
        for (int i = 0; i < src.Length; i++) src[i] = (ushort)i;
        var dst = new float[src.Length];
        DTypeConversion.F16ToF32(src, dst);
        for (int i = 0; i < src.Length; i++)
        {
            uint expected = BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf((ushort)i));
            uint actual = BitConverter.SingleToUInt32Bits(dst[i]);
            Assert.True(expected == actual, $"f16 0x{i:X4}: expected 0x{expected:X8}, got 0x{actual:X8}");
        }
    }

    [Fact]
    public void BF16ToF32_is_exact_for_every_bf16_value()
    {
        var src = new ushort[65536];
        for (int i = 0; i < src.Length; i++) src[i] = (ushort)i;
        var dst = new float[src.Length];
        DTypeConversion.BF16ToF32(src, dst);
        for (int i = 0; i < src.Length; i++) Assert.Equal((uint)i << 16, BitConverter.SingleToUInt32Bits(dst[i]));
    }

    [Fact]
    public void F16ToBF16_rounds_every_f16_value_to_nearest_even()
    {
        var src = new ushort[65536];
        for (int i = 0; i < src.Length; i++) src[i] = (ushort)i;
        var dst = new ushort[src.Length];
        DTypeConversion.F16ToBF16(src, dst);
        for (int i = 0; i < src.Length; i++)
        {
            ushort expected = RefBF16((float)BitConverter.UInt16BitsToHalf((ushort)i));
            Assert.True(expected == dst[i], $"f16 0x{i:X4}: expected bf16 0x{expected:X4}, got 0x{dst[i]:X4}");
        }
    }

    public static IEnumerable<object[]> F32Cases() => F32Edges.Select(BitConverter.SingleToUInt32Bits).Distinct().Select(b => new object[] { b });

    [Theory]
    [MemberData(nameof(F32Cases))]
    public void F32ToF16_edge_cases_match_System_Half(uint bits)
    {
        float f = BitConverter.UInt32BitsToSingle(bits);
        var dst = new ushort[1];
        DTypeConversion.F32ToF16([f], dst);
        Assert.Equal(HalfBits(f), dst[0]);
    }

    [Theory]
    [MemberData(nameof(F32Cases))]
    public void F32ToBF16_edge_cases_round_to_nearest_even(uint bits)
    {
        float f = BitConverter.UInt32BitsToSingle(bits);
        var dst = new ushort[1];
        DTypeConversion.F32ToBF16([f], dst);
        Assert.Equal(RefBF16(f), dst[0]);
        if (float.IsNaN(f))
        {
            Assert.True(float.IsNaN(Bf16(dst[0])));
            Assert.Equal(bits >> 31, (uint)dst[0] >> 15);
        }
    }

    [Fact]
    public void Specific_rounding_ties_and_limits()
    {
        ushort ToF16(float f) { var d = new ushort[1]; DTypeConversion.F32ToF16([f], d); return d[0]; }
        ushort ToBF16(float f) { var d = new ushort[1]; DTypeConversion.F32ToBF16([f], d); return d[0]; }

        Assert.Equal(0x7BFF, ToF16(65504f));                 // f16 max
        Assert.Equal(0x7BFF, ToF16(65519.996f));             // just below the overflow tie
        Assert.Equal(0x7C00, ToF16(65520f));                 // tie at max + half ulp → even → inf
        Assert.Equal(0x0001, ToF16(5.9604645e-08f));         // min subnormal
        Assert.Equal(0x0000, ToF16(2.9802322e-08f));         // half of min subnormal: tie → 0
        Assert.Equal(0x0002, ToF16(8.940697e-08f));          // 1.5 × min subnormal: tie → 2
        Assert.Equal(0x3C00, ToF16(1.00048828125f));         // 1 + half ulp → even (1.0)
        Assert.Equal(0x3C02, ToF16(1.00146484375f));         // 1 + 1.5 ulp → even (1 + 2 ulp)
        Assert.Equal(0x8000, ToF16(-0f));
        Assert.Equal(0x3F80, ToBF16(1.00390625f));           // 1 + half bf16 ulp → 1.0
        Assert.Equal(0x3F82, ToBF16(1.01171875f));           // 1 + 1.5 ulp → 1 + 2 ulp
        Assert.Equal(0x7F80, ToBF16(float.MaxValue));        // rounds past bf16 max → inf
        Assert.Equal(0x8000, ToBF16(-0f));
        Assert.Equal(0x7FC1, ToBF16(BitConverter.UInt32BitsToSingle(0x7F810000))); // signalling NaN stays NaN, quieted
        Assert.Equal(0x7FC0, ToBF16(BitConverter.UInt32BitsToSingle(0x7F800001))); // payload only in dropped bits: still NaN
    }

    [Fact]
    public void F32ToF16_and_F32ToBF16_match_references_on_random_bit_patterns_and_all_tail_lengths()
    {
        var rng = new Random(1234);
        foreach (int n in Enumerable.Range(0, 70).Append(100_003))
        {
            var src = new float[n];
            for (int i = 0; i < n; i++)
            {
                // Mix uniformly random bit patterns with values near the f16 range, where the interesting cases are.
                src[i] = (i % 2 == 0)
                    ? BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32))
                    : (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 20)));
            }
            var f16 = new ushort[n];
            var bf16 = new ushort[n];
            var s16 = DTypeConversion.F32ToF16(src, f16);
            var sb16 = DTypeConversion.F32ToBF16(src, bf16);
            long ovf = 0, ftz = 0, sub = 0, bovf = 0, bftz = 0, bsub = 0;
            for (int i = 0; i < n; i++)
            {
                float f = src[i];
                ushort e16 = HalfBits(f), eb = RefBF16(f);
                Assert.True(e16 == f16[i], $"n={n} i={i} {f:R}: f16 expected 0x{e16:X4} got 0x{f16[i]:X4}");
                Assert.True(eb == bf16[i], $"n={n} i={i} {f:R}: bf16 expected 0x{eb:X4} got 0x{bf16[i]:X4}");
                bool finiteNonZero = float.IsFinite(f) && f != 0;
                if (float.IsFinite(f) && (e16 & 0x7FFF) == 0x7C00) ovf++;
                if (finiteNonZero && (e16 & 0x7FFF) == 0) ftz++;
                if (IsF16Subnormal(e16)) sub++;
                if (float.IsFinite(f) && (eb & 0x7FFF) == 0x7F80) bovf++;
                if (finiteNonZero && (eb & 0x7FFF) == 0) bftz++;
                if ((eb & 0x7F80) == 0 && (eb & 0x7F) != 0) bsub++;
            }
            Assert.Equal(new ConversionStats(ovf, ftz, sub), s16);
            Assert.Equal(new ConversionStats(bovf, bftz, bsub), sb16);
        }
    }

    [Fact]
    public void Tail_lengths_of_16_bit_conversions_match_the_vector_path()
    {
        var rng = new Random(99);
        for (int n = 0; n < 70; n++)
        {
            var src = new ushort[n];
            for (int i = 0; i < n; i++) src[i] = (ushort)rng.Next(0, 65536);
            var a = new ushort[n + 3];
            var b = new ushort[n + 3];
            var f = new float[n + 3];
            var g = new float[n + 3];
            DTypeConversion.BF16ToF16(src, a);
            DTypeConversion.F16ToBF16(src, b);
            DTypeConversion.F16ToF32(src, f);
            DTypeConversion.BF16ToF32(src, g);
            for (int i = 0; i < n; i++)
            {
                Assert.Equal(HalfBits(Bf16(src[i])), a[i]);
                Assert.Equal(RefBF16((float)BitConverter.UInt16BitsToHalf(src[i])), b[i]);
                Assert.Equal(BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf(src[i])), BitConverter.SingleToUInt32Bits(f[i]));
                Assert.Equal((uint)src[i] << 16, BitConverter.SingleToUInt32Bits(g[i]));
            }
            // Nothing is written past the source length.
            for (int i = n; i < n + 3; i++) Assert.True(a[i] == 0 && b[i] == 0 && f[i] == 0 && g[i] == 0);
        }
    }

    [Fact]
    public void Stats_count_overflow_flush_and_subnormal_and_ignore_inf_and_nan()
    {
        float[] values = [1e5f, -1e5f, 1e-9f, 1e-6f, 1f, float.PositiveInfinity, float.NaN, 0f];
        var bf = new ushort[values.Length];
        DTypeConversion.F32ToBF16(values, bf); // all of these are exact in bf16 terms apart from rounding
        var f16 = new ushort[values.Length];
        var stats = DTypeConversion.BF16ToF16(bf, f16);
        Assert.Equal(new ConversionStats(Overflows: 2, FlushedToZero: 1, Subnormals: 1), stats);
        Assert.True(stats.LostRange);
        Assert.Equal(new ConversionStats(3, 2, 1), stats + new ConversionStats(1, 1, 0));
    }

    [Fact]
    public void Convert_dispatches_on_types_and_copies_same_type()
    {
        float[] f32 = [1.5f, -2.25f, 70000f, 1e-8f, 0.1f];
        byte[] raw = MemoryMarshal.AsBytes(f32.AsSpan()).ToArray();

        var viaConvert = new ushort[5];
        var direct = new ushort[5];
        Assert.Equal(DTypeConversion.F32ToF16(f32, direct), DTypeConversion.Convert(raw, SafetensorsDType.F32, viaConvert, WeightFormat.Fp16));
        Assert.Equal(direct, viaConvert);

        DTypeConversion.F32ToBF16(f32, direct);
        DTypeConversion.Convert(raw, SafetensorsDType.F32, viaConvert, WeightFormat.Bf16);
        Assert.Equal(direct, viaConvert);

        ushort[] bf = [0x3F80, 0xC000, 0x4780, 0x0001];
        byte[] bfRaw = MemoryMarshal.AsBytes(bf.AsSpan()).ToArray();
        var copy = new ushort[4];
        Assert.Equal(default, DTypeConversion.Convert(bfRaw, SafetensorsDType.BF16, copy, WeightFormat.Bf16));
        Assert.Equal(bf, copy);
        var stats = DTypeConversion.Convert(bfRaw, SafetensorsDType.BF16, copy, WeightFormat.Fp16);
        Assert.Equal(new ushort[] { 0x3C00, 0xC000, 0x7C00, 0x0000 }, copy); // 65536 overflows, 2^-133 flushes
        Assert.Equal(new ConversionStats(1, 1, 0), stats);

        Assert.Throws<ArgumentException>(() => DTypeConversion.Convert(new byte[3], SafetensorsDType.F16, new ushort[2], WeightFormat.Fp16));
        Assert.Throws<ArgumentException>(() => DTypeConversion.Convert(new byte[8], SafetensorsDType.F16, new ushort[2], WeightFormat.Fp16));
        Assert.Throws<NotSupportedException>(() => DTypeConversion.Convert(new byte[8], SafetensorsDType.Other, new ushort[8], WeightFormat.Fp16));
    }
}
