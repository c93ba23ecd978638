using System.Text.Json;
using IlgpuLlama.Kernels;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Quantization;

/// <summary>
/// The host K-quant port (<see cref="KQuants"/>) against super-blocks ggml's own reference code
/// quantised and dequantised (tests/fixtures/quant/ggml-kquant-blocks.jsonl, see the README there),
/// byte for byte and bit for bit.
/// </summary>
public sealed class KQuantTests
{
    sealed record GgmlSuperBlock(string Name, float[] X, byte[] Q4, byte[] Q5, byte[] Q6, float[] Y4, float[] Y5, float[] Y6);

    static readonly string FixtureFile = Path.Combine(GoldenFixture.Directory, "..", "quant", "ggml-kquant-blocks.jsonl");

    static float[] Floats(JsonElement e) => e.EnumerateArray().Select(v => BitConverter.UInt32BitsToSingle(v.GetUInt32())).ToArray();

    static byte[] Bytes(JsonElement e) => e.EnumerateArray().Select(v => v.GetByte()).ToArray();

    static IReadOnlyList<GgmlSuperBlock> Blocks { get; } = File.ReadLines(FixtureFile).Select(line =>
    {
        using var doc = JsonDocument.Parse(line);
        var r = doc.RootElement;
        return new GgmlSuperBlock(
            r.GetProperty("name").GetString()!,
            Floats(r.GetProperty("x")),
            Bytes(r.GetProperty("q4_K")),
            Bytes(r.GetProperty("q5_K")),
            Bytes(r.GetProperty("q6_K")),
            Floats(r.GetProperty("q4_K_y")),
            Floats(r.GetProperty("q5_K_y")),
            Floats(r.GetProperty("q6_K_y")));
    }).ToList();

    static byte[] Encoded(GgmlSuperBlock b, KQuantType t) => t switch
    {
        KQuantType.Q4_K => b.Q4,
        KQuantType.Q5_K => b.Q5,
        _ => b.Q6,
    };

    static float[] Decoded(GgmlSuperBlock b, KQuantType t) => t switch
    {
        KQuantType.Q4_K => b.Y4,
        KQuantType.Q5_K => b.Y5,
        _ => b.Y6,
    };

    static void Quantize(KQuantType t, ReadOnlySpan<float> x, Span<byte> block)
    {
        switch (t)
        {
            case KQuantType.Q4_K: KQuants.QuantizeQ4_K(x, block); break;
            case KQuantType.Q5_K: KQuants.QuantizeQ5_K(x, block); break;
            default: KQuants.QuantizeQ6_K(x, block); break;
        }
    }

    static void Dequantize(KQuantType t, ReadOnlySpan<byte> block, Span<float> y)
    {
        switch (t)
        {
            case KQuantType.Q4_K: KQuants.DequantizeQ4_K(block, y); break;
            case KQuantType.Q5_K: KQuants.DequantizeQ5_K(block, y); break;
            default: KQuants.DequantizeQ6_K(block, y); break;
        }
    }

    public static TheoryData<KQuantType> Types => new() { KQuantType.Q4_K, KQuantType.Q5_K, KQuantType.Q6_K };

    [Fact]
    public void The_fixture_holds_the_adversarial_blocks()
    {
        Assert.Equal(61, Blocks.Count);
        var names = Blocks.Select(b => b.Name).ToHashSet();
        foreach (var n in new[]
        {
            "all zeros", "negative zeros", "one non-zero value", "all equal positive", "all equal negative",
            "mixed signs, huge outlier", "sub-blocks of very different magnitudes", "tiny 1e-30", "fp16 subnormal scales",
            "near 65504", "alternating +/- max", "half-integer midpoints", "linear ramp", "only sub-block 5 non-zero",
            "all-negative ramp",
        })
            Assert.Contains(n, names);
        Assert.Equal(34, Blocks.Count(b => b.Name.StartsWith("random ", StringComparison.Ordinal)));
        // blocks on which a division turned into a reciprocal product, or a product re-associated, changes ggml's bytes
        Assert.Equal(9, Blocks.Count(b => b.Name.StartsWith("order-sensitive ", StringComparison.Ordinal)));
        foreach (var b in Blocks)
        {
            Assert.Equal(KQuants.SuperBlock, b.X.Length);
            Assert.Equal(KQuants.Q4_KBytes, b.Q4.Length);
            Assert.Equal(KQuants.Q5_KBytes, b.Q5.Length);
            Assert.Equal(KQuants.Q6_KBytes, b.Q6.Length);
            Assert.Equal(KQuants.SuperBlock, b.Y4.Length);
            Assert.Equal(KQuants.SuperBlock, b.Y5.Length);
            Assert.Equal(KQuants.SuperBlock, b.Y6.Length);
        }
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Quantiser_equals_ggml_byte_for_byte(KQuantType t)
    {
        var block = new byte[KQuants.BlockBytes(t)];
        var failures = new List<string>();
        foreach (var b in Blocks)
        {
            block.AsSpan().Fill(0xAA); // every byte must be written
            Quantize(t, b.X, block);
            byte[] expected = Encoded(b, t);
            int at = block.AsSpan().CommonPrefixLength(expected);
            if (at < block.Length)
                failures.Add($"{b.Name}: first difference at byte {at}: 0x{block[at]:X2}, ggml 0x{expected[at]:X2}");
        }
        Assert.True(failures.Count == 0, $"{t}: {failures.Count} of {Blocks.Count} blocks differ from ggml:\n" + string.Join("\n", failures));
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Dequantiser_equals_ggml_bit_for_bit(KQuantType t)
    {
        var y = new float[KQuants.SuperBlock];
        var failures = new List<string>();
        foreach (var b in Blocks)
        {
            Dequantize(t, Encoded(b, t), y);
            float[] expected = Decoded(b, t);
            for (int i = 0; i < y.Length; i++)
            {
                if (BitConverter.SingleToUInt32Bits(y[i]) != BitConverter.SingleToUInt32Bits(expected[i]))
                {
                    failures.Add($"{b.Name}: value {i} is {y[i]:R} (0x{BitConverter.SingleToUInt32Bits(y[i]):X8}), ggml {expected[i]:R} (0x{BitConverter.SingleToUInt32Bits(expected[i]):X8})");
                    break;
                }
            }
        }
        Assert.True(failures.Count == 0, $"{t}: {failures.Count} of {Blocks.Count} blocks differ from ggml:\n" + string.Join("\n", failures));
    }

    // RMS(dequantised - x) / RMS(x) on the random blocks whose largest magnitude is at least 1e-2, per
    // type; the worst ggml reaches on them is 0.077 (Q4_K), 0.039 (Q5_K) and 0.020 (Q6_K). Smaller
    // blocks are left out: their fp16 super-block scales become subnormal and lose precision, and
    // Q6_K's d = max_scale / 128 rounds to zero below a largest magnitude of about 1.2e-4 (see below).
    [Theory]
    [InlineData(KQuantType.Q4_K, 0.10)]
    [InlineData(KQuantType.Q5_K, 0.05)]
    [InlineData(KQuantType.Q6_K, 0.025)]
    public void Round_trip_error_is_bounded(KQuantType t, double bound)
    {
        var block = new byte[KQuants.BlockBytes(t)];
        var y = new float[KQuants.SuperBlock];
        var tested = Blocks.Where(b => b.Name.StartsWith("random ", StringComparison.Ordinal) && b.X.Max(MathF.Abs) >= 1e-2f).ToList();
        Assert.True(tested.Count >= 20, $"only {tested.Count} random blocks of magnitude 1e-2 or more");
        foreach (var b in tested)
        {
            Quantize(t, b.X, block);
            Dequantize(t, block, y);
            double err = 0, sum = 0;
            for (int i = 0; i < y.Length; i++)
            {
                err += Math.Pow((double)y[i] - b.X[i], 2);
                sum += Math.Pow(b.X[i], 2);
            }
            double relative = Math.Sqrt(err / sum);
            Assert.True(relative < bound, $"{t} {b.Name}: relative RMS error {relative:G4} >= {bound}");
        }
    }

    // ggml's behaviour, reproduced: a block whose largest magnitude is about 1.16e-4 gets a Q6_K
    // super-block scale below half the smallest fp16 subnormal, so d is -0 and every weight decodes to ±0.
    [Fact]
    public void Q6_K_decodes_a_block_below_the_fp16_range_of_its_scale_to_zeros()
    {
        var b = Blocks.Single(b => b.Name == "random uniform 19");
        Assert.InRange(b.X.Max(MathF.Abs), 1e-4f, 1.2e-4f);
        var block = new byte[KQuants.Q6_KBytes];
        var y = new float[KQuants.SuperBlock];
        KQuants.QuantizeQ6_K(b.X, block);
        Assert.Equal(0, block[208] | (block[209] & 0x7F)); // d is -0: 1 / iscale is a negative number too small for fp16
        KQuants.DequantizeQ6_K(block, y);
        Assert.All(y, v => Assert.Equal(0f, v));
        Assert.All(b.Y6, v => Assert.Equal(0f, v));
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Row_helpers_are_the_blocks_in_sequence(KQuantType t)
    {
        int bytes = KQuants.BlockBytes(t);
        var row = Blocks.SelectMany(b => b.X).ToArray();
        var q = new byte[Blocks.Count * bytes];
        KQuants.QuantizeRow(t, row, q);
        Assert.Equal(Blocks.SelectMany(b => Encoded(b, t)), q);
        var y = new float[row.Length];
        KQuants.DequantizeRow(t, q, y);
        Assert.Equal(Blocks.SelectMany(b => Decoded(b, t)).Select(BitConverter.SingleToUInt32Bits), y.Select(BitConverter.SingleToUInt32Bits));
    }

    [Theory]
    [InlineData(KQuantType.Q4_K, 255)]
    [InlineData(KQuantType.Q5_K, 257)]
    [InlineData(KQuantType.Q6_K, 100)]
    [InlineData(KQuantType.Q4_K, 768 + 32)]
    public void Row_helpers_reject_lengths_not_a_multiple_of_256(KQuantType t, int length)
    {
        int blocks = (length + 255) / 256;
        var row = new float[length];
        var q = new byte[blocks * KQuants.BlockBytes(t)];
        var e1 = Assert.Throws<ArgumentException>(() => KQuants.QuantizeRow(t, row, q));
        Assert.Contains(length.ToString(System.Globalization.CultureInfo.InvariantCulture), e1.Message);
        var e2 = Assert.Throws<ArgumentException>(() => KQuants.DequantizeRow(t, q, row));
        Assert.Contains(length.ToString(System.Globalization.CultureInfo.InvariantCulture), e2.Message);
    }

    [Fact]
    public void Block_sizes_are_ggmls()
    {
        Assert.Equal(144, KQuants.BlockBytes(KQuantType.Q4_K));
        Assert.Equal(176, KQuants.BlockBytes(KQuantType.Q5_K));
        Assert.Equal(210, KQuants.BlockBytes(KQuantType.Q6_K));
        Assert.Throws<ArgumentException>(() => KQuants.QuantizeQ4_K(new float[256], new byte[143]));
        Assert.Throws<ArgumentException>(() => KQuants.DequantizeQ6_K(new byte[210], new float[255]));
    }
}
