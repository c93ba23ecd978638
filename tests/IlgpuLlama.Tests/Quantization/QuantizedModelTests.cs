using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Quantization;

/// <summary>A tiny Llama 3 model whose every matrix has whole 32-value blocks (the built-in demo's shapes), written once for these tests.</summary>
public sealed class QuantizableModel : IDisposable
{
    public QuantizableModel()
    {
        Directory = CliHarness.TempDir();
        DemoModel.Write(Directory);
    }

    public string Directory { get; }

    /// <summary>Prompt and continuation positions the logits are compared at.</summary>
    public int[] Tokens { get; } = [DemoModel.Config.BosTokenId!.Value, 84, 104, 101, 32, 113, 117, 105, 99, 107, 32, 98, 114, 111, 119, 110, 300, 17, 260, 401];

    public void Dispose() => System.IO.Directory.Delete(Directory, recursive: true);
}

/// <summary>
/// Q8_0 and Q4_0 models end to end on the CPU accelerator: their logits on the prefill and the decode
/// path equal a float64 forward pass over the dequantised weights within the fp16 golden tolerance;
/// the allocator equals the memory formula; a model whose input lengths are not whole blocks is
/// refused before anything is allocated.
/// </summary>
public sealed class QuantizedModelTests(QuantizableModel model, ITestOutputHelper output) : IClassFixture<QuantizableModel>
{
    static double MaxAbsDiff(ReadOnlySpan<float> a, double[] b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++)
            m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }

    [Fact]
    public void The_float64_reference_forward_pass_reproduces_the_golden_reference()
    {
        var c = GoldenFixture.Cases[0];
        var logits = new ReferenceForward(GoldenFixture.Directory).Logits(c.AllTokens);
        double worst = 0;
        for (int t = 0; t < c.AllTokens.Length; t++)
            worst = Math.Max(worst, MaxAbsDiff(c.Row(t), logits[t]));
        output.WriteLine($"reference forward vs golden float64: max |error| {worst:G3}");
        Assert.True(worst < 1e-4, $"the test's reference forward pass differs from the golden reference by {worst}");
    }

    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void Logits_equal_a_float64_forward_pass_on_the_dequantised_weights(string dtype)
    {
        var format = WeightFormat.Parse(dtype);
        var expected = new ReferenceForward(model.Directory, format).Logits(model.Tokens);
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var llama = LlamaModel.Load(device, model.Directory, new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 64, WeightFormat = format });
        var prefill = new float[model.Tokens.Length][];
        llama.PrefillLogits([new SequenceInput(0, 0, model.Tokens)], (_, pos, row) => prefill[pos] = row.ToArray());
        double worstPrefill = 0, worstDecode = 0;
        var row = new float[llama.Config.VocabSize];
        for (int t = 0; t < model.Tokens.Length; t++)
        {
            worstPrefill = Math.Max(worstPrefill, MaxAbsDiff(prefill[t], expected[t]));
            llama.Decode([new DecodeRow(0, t, model.Tokens[t])], SelectMode.ArgMax);
            llama.ReadLogitsRow(0, row);
            worstDecode = Math.Max(worstDecode, MaxAbsDiff(row, expected[t]));
        }
        output.WriteLine($"{dtype}: max |error| prefill {worstPrefill:G3}, decode {worstDecode:G3} over {model.Tokens.Length} positions (tolerance {GoldenModelTests.LogitTolerance})");
        Assert.True(worstPrefill <= GoldenModelTests.LogitTolerance, $"{dtype} prefill logits off by {worstPrefill}");
        Assert.True(worstDecode <= GoldenModelTests.LogitTolerance, $"{dtype} decode logits off by {worstDecode}");
    }

    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void Allocator_totals_equal_the_memory_formula_to_the_byte(string dtype)
    {
        var format = WeightFormat.Parse(dtype);
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var llama = LlamaModel.Load(device, model.Directory, new EngineOptions { MaxBatchSize = 2, MaxSeqLen = 64, WeightFormat = format });
        var a = llama.Allocator;
        Assert.Equal(llama.Plan.WeightBytes, a.LiveBytes(MemoryCategory.Weights));
        Assert.Equal(llama.Plan.TotalBytes, a.TotalLiveBytes);
        var c = llama.Config;
        // matrices: rows x in/32 x bytes per block; norms: 2 B each; the tied LM head counted once.
        long expected = c.ExpectedTensors().Sum(t => t.Shape.Length == 2 ? t.Shape[0] * (t.Shape[1] / 32) * format.BytesPerBlock : t.Shape[0] * 2);
        Assert.Equal(expected, llama.Plan.WeightBytes);
        Assert.Contains(a.LiveAllocations, x => x.Name == "model.layers.1.mlp.up_proj.weight.scales" && x.ElementType == "UInt16");
        Assert.Contains(a.LiveAllocations, x => x.Name == "lm_head.weight" && x.Bytes == 0);
    }

    [Fact]
    public void A_model_without_whole_blocks_is_refused_before_anything_is_allocated()
    {
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        var e = Assert.Throws<EngineArgumentException>(() => LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { WeightFormat = WeightFormat.Q8_0 }));
        Assert.Contains("model.layers.0.mlp.down_proj.weight", e.Message);
        Assert.Contains("not a multiple of 32", e.Message);
        Assert.Equal(EngineParameter.WeightFormat, e.Parameter);
    }
}
