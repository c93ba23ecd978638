using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Tests.Quantization;

namespace IlgpuLlama.Tests.Model;

/// <summary>
/// A context past 1024 positions end to end on the CPU accelerator: a 1,100-token prompt prefilled in
/// chunks, then decode steps at positions 1,100 and beyond, against a float64 forward pass over the
/// same fp16 weights (the attention spans every earlier position, the KV cache holds them all).
/// </summary>
public sealed class LongContextTests(QuantizableModel model) : IClassFixture<QuantizableModel>
{
    [Fact]
    public void Logits_past_1024_positions_match_a_float64_forward_pass()
    {
        const int promptLength = 1100, steps = 3;
        var rng = new Random(1024);
        var tokens = Enumerable.Range(0, promptLength + steps).Select(_ => rng.Next(512)).ToArray();
        var expected = new ReferenceForward(model.Directory, WeightFormat.Fp16).Logits(tokens);
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var llama = LlamaModel.Load(device, model.Directory, new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 1200, PrefillChunk = 512 });
        var last = new float[llama.Config.VocabSize];
        llama.PrefillLogits([new SequenceInput(0, 0, tokens[..promptLength])], (_, pos, row) =>
        {
            if (pos == promptLength - 1)
                row.CopyTo(last);
        });
        double worst = MaxAbsDiff(last, expected[promptLength - 1]);
        var row = new float[llama.Config.VocabSize];
        for (int t = promptLength; t < promptLength + steps; t++)
        {
            llama.Decode([new DecodeRow(0, t, tokens[t])], SelectMode.ArgMax);
            llama.ReadLogitsRow(0, row);
            worst = Math.Max(worst, MaxAbsDiff(row, expected[t]));
        }
        Assert.True(worst <= GoldenModelTests.LogitTolerance, $"logits past 1024 positions off by {worst}");
    }

    static double MaxAbsDiff(ReadOnlySpan<float> a, double[] b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++)
            m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }
}
