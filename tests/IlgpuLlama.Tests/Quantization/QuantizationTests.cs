using System.Text.Json;
using IlgpuLlama.Kernels;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Quantization;

/// <summary>
/// The Q8_0 and Q4_0 quantisers against ggml (blocks quantised by ggml's own reference code, see
/// tests/fixtures/quant/README.md) and against a reference written here from the format definitions,
/// bit for bit; dequantisation against the definitions.
/// </summary>
public sealed class QuantizationTests
{
    sealed record GgmlBlock(string Name, float[] X, ushort Q8Scale, sbyte[] Q8, ushort Q4Scale, byte[] Q4);

    static readonly string FixtureFile = Path.Combine(GoldenFixture.Directory, "..", "quant", "ggml-blocks.jsonl");

    static IReadOnlyList<GgmlBlock> Blocks { get; } = File.ReadLines(FixtureFile).Select(line =>
    {
        using var doc = JsonDocument.Parse(line);
        var r = doc.RootElement;
        return new GgmlBlock(
            r.GetProperty("name").GetString()!,
            r.GetProperty("x").EnumerateArray().Select(e => BitConverter.UInt32BitsToSingle(e.GetUInt32())).ToArray(),
            (ushort)r.GetProperty("q8_0_scale").GetInt32(),
            r.GetProperty("q8_0").EnumerateArray().Select(e => (sbyte)e.GetInt32()).ToArray(),
            (ushort)r.GetProperty("q4_0_scale").GetInt32(),
            r.GetProperty("q4_0").EnumerateArray().Select(e => (byte)e.GetInt32()).ToArray());
    }).ToList();

    [Fact]
    public void The_fixture_holds_the_adversarial_blocks()
    {
        Assert.Equal(214, Blocks.Count);
        var names = Blocks.Select(b => b.Name).ToHashSet();
        foreach (var n in new[] { "all zeros", "negative zeros", "tie +max first", "tie -max first", "subnormal scale", "overflowing scale", "q8 halfway points" })
            Assert.Contains(n, names);
        Assert.Equal(0x7C00, Blocks.Single(b => b.Name == "overflowing scale").Q8Scale & 0x7C00);
    }

    [Fact]
    public void Q8_0_equals_ggml_bit_for_bit()
    {
        var quants = new byte[32];
        foreach (var b in Blocks)
        {
            ushort scale = WeightFormat.Q8_0.QuantizeBlock(b.X, quants);
            Assert.True(b.Q8Scale == scale, $"{b.Name}: scale 0x{scale:X4}, ggml 0x{b.Q8Scale:X4}");
            Assert.Equal(b.Q8.Select(q => (byte)q), quants);
        }
    }

    [Fact]
    public void Q4_0_equals_ggml_bit_for_bit()
    {
        var quants = new byte[16];
        foreach (var b in Blocks)
        {
            ushort scale = WeightFormat.Q4_0.QuantizeBlock(b.X, quants);
            Assert.True(b.Q4Scale == scale, $"{b.Name}: scale 0x{scale:X4}, ggml 0x{b.Q4Scale:X4}");
            Assert.True(b.Q4.SequenceEqual(quants), $"{b.Name}: quants differ from ggml's");
        }
    }

    // The definitions, written out independently of the engine's quantiser (the wording).
    static (ushort Scale, sbyte[] Q) DefinitionQ8(float[] x)
    {
        float amax = x.Select(MathF.Abs).Max();
        float d = amax / 127f;
        float id = d != 0 ? 1f / d : 0f;
        var q = x.Select(v => (sbyte)MathF.Round(v * id, MidpointRounding.AwayFromZero)).ToArray();
        return (BitConverter.HalfToUInt16Bits((Half)d), q);
    }

    static (ushort Scale, int[] Q) DefinitionQ4(float[] x)
    {
        int first = 0;
        for (int j = 1; j < x.Length; j++)
            if (MathF.Abs(x[j]) > MathF.Abs(x[first]))
                first = j;
        float m = x[first];
        float d = m / -8f;
        float id = d != 0 ? 1f / d : 0f;
        var q = x.Select(v => Math.Min(15, (int)MathF.Truncate(v * id + 8.5f))).ToArray();
        return (BitConverter.HalfToUInt16Bits((Half)d), q);
    }

    [Fact]
    public void The_quantisers_equal_the_definitions_on_random_blocks()
    {
        var rng = new Random(20261202);
        var q8 = new byte[32];
        var q4 = new byte[16];
        for (int n = 0; n < 2000; n++)
        {
            double magnitude = Math.Pow(10, rng.Next(-6, 4));
            var x = Enumerable.Range(0, 32).Select(_ => (float)((rng.NextDouble() * 2 - 1) * magnitude)).ToArray();
            if (n % 7 == 0)
                x[rng.Next(32)] = -x[rng.Next(32)]; // ties of the largest magnitude now and then
            var (s8, e8) = DefinitionQ8(x);
            Assert.Equal(s8, WeightFormat.Q8_0.QuantizeBlock(x, q8));
            Assert.Equal(e8.Select(v => (byte)v), q8);
            var (s4, e4) = DefinitionQ4(x);
            Assert.Equal(s4, WeightFormat.Q4_0.QuantizeBlock(x, q4));
            for (int j = 0; j < 16; j++)
                Assert.Equal((byte)(e4[j] | (e4[j + 16] << 4)), q4[j]);
        }
    }

    [Fact]
    public void Dequantised_values_are_the_definitions()
    {
        foreach (var b in Blocks.Where(b => (b.Q8Scale & 0x7C00) != 0x7C00))
        {
            float d8 = (float)BitConverter.UInt16BitsToHalf(b.Q8Scale);
            float d4 = (float)BitConverter.UInt16BitsToHalf(b.Q4Scale);
            var q8 = b.Q8.Select(q => (byte)q).ToArray();
            for (int j = 0; j < 32; j++)
            {
                Assert.Equal(b.Q8[j] * d8, WeightFormat.Q8_0.DequantizeBlockValue(q8, b.Q8Scale, j));
                int q4 = j < 16 ? b.Q4[j] & 0xF : b.Q4[j - 16] >> 4;
                Assert.Equal((q4 - 8) * d4, WeightFormat.Q4_0.DequantizeBlockValue(b.Q4, b.Q4Scale, j));
            }
        }
    }

    [Fact]
    public void Formats_have_ggml_block_sizes()
    {
        Assert.Equal(34, WeightFormat.Q8_0.BytesPerBlock);
        Assert.Equal(18, WeightFormat.Q4_0.BytesPerBlock);
        Assert.Equal(8.5, WeightFormat.Q8_0.BitsPerWeight);
        Assert.Equal(4.5, WeightFormat.Q4_0.BitsPerWeight);
        Assert.Equal(2048 / 32 * 34L * 3, WeightFormat.Q8_0.MatrixBytes(3, 2048));
        Assert.Same(WeightFormat.Fp16, WeightFormat.Q4_0.VectorFormat);
        Assert.Equal(["fp16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"], WeightFormat.Names);
        // ggml's K-quant super-blocks: the quants plane and the side words hold exactly ggml's bytes.
        Assert.Equal([144, 176, 210], new[] { WeightFormat.Q4_K, WeightFormat.Q5_K, WeightFormat.Q6_K }.Select(f => f.BytesPerBlock));
        Assert.Equal([4.5, 5.5, 6.5625], new[] { WeightFormat.Q4_K, WeightFormat.Q5_K, WeightFormat.Q6_K }.Select(f => f.BitsPerWeight));
        Assert.Equal(2048 / 256 * 144L * 3, WeightFormat.Q4_K.MatrixBytes(3, 2048));
        Assert.Contains("matvec_q6_k_b1", WeightFormat.Q6_K.Kernels);
        Assert.Contains("gemm_q5_k", WeightFormat.Q5_K.Kernels);
        Assert.Contains("matvec_q4_0_b1", WeightFormat.Q4_0.Kernels);
        Assert.Contains("gemm_q8_0", WeightFormat.Q8_0.Kernels);
        Assert.Contains("embedding_q8_0", WeightFormat.Q8_0.Kernels);
    }
}
