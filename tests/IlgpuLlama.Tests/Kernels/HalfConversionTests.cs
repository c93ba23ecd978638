using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed class HalfConversionTests(KernelTestContext ctx)
{
    static IEnumerable<float> Probes()
    {
        var rng = new Random(1);
        float[] special = [0f, -0f, 1f, -1f, 65504f, 65505f, 65519.99f, 65520f, 1e6f, -1e6f, 6.1035156e-5f, 6.0975552e-5f, 5.9604645e-8f,
            2.9802322e-8f, 2.9802326e-8f, 8.940697e-8f, 1e-10f, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, 0.1f, 1.0009766f, 1.0004883f, 1.0014648f];
        foreach (var f in special)
            yield return f;
        for (int i = 0; i < 200_000; i++)
            yield return BitConverter.Int32BitsToSingle(rng.Next()) is var v && float.IsFinite(v) && Math.Abs(v) < 1e6 ? v : (float)(rng.NextDouble() - 0.5);
        for (int i = 0; i < 100_000; i++)
            yield return (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 18)));
    }

    [Fact]
    public void ToHalfBits_rounds_to_nearest_even_like_System_Half()
    {
        foreach (float f in Probes())
        {
            ushort expected = BitConverter.HalfToUInt16Bits((System.Half)f);
            ushort got = DeviceMath.ToHalfBits(f);
            Assert.True(expected == got, $"{f:R}: got 0x{got:X4}, expected 0x{expected:X4}");
        }
        Assert.True(System.Half.IsNaN(BitConverter.UInt16BitsToHalf(DeviceMath.ToHalfBits(float.NaN))));
    }

    [Fact]
    public void Fp16_widening_on_device_is_exact_for_every_bit_pattern()
    {
        var k = ctx.Kernels(4);
        int hidden = 256;
        var table = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        var tokens = Enumerable.Range(0, 256).ToArray();
        using var tb = k.Accelerator.Allocate1D(table);
        using var tok = k.Accelerator.Allocate1D(tokens);
        using var xb = k.Accelerator.Allocate1D<float>(65536);
        k.Embedding(WeightMatrix.Of(WeightFormat.Fp16, tb.View, 256, hidden), tok.View, xb.View, 256);
        var got = xb.GetAsArray1D();
        for (int i = 0; i < 65536; i++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)i);
            Assert.True(float.IsNaN(expected) ? float.IsNaN(got[i]) : expected.Equals(got[i]), $"0x{i:X4}: got {got[i]:R}, expected {expected:R}");
        }
    }
}
