using ILGPU.Runtime.CPU;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Kernels;
using IlgpuLlama.Sampling;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Model;

/// <summary>The tiny-llama3 model loaded once on the engine's CPU accelerator (warps of 2, one warp per group).</summary>
public sealed class GoldenModelContext() : GoldenModelFixture(new EngineOptions { MaxBatchSize = 4, MaxSeqLen = 128 });

/// <summary>The tiny-llama3 model loaded once with given options on the engine's CPU accelerator (a collection fixture's base).</summary>
public abstract class GoldenModelFixture : IDisposable
{
    protected GoldenModelFixture(EngineOptions options)
    {
        Device = ComputeDevice.Create(DeviceKind.Cpu);
        try
        {
            Model = LlamaModel.Load(Device, GoldenFixture.Directory, options);
        }
        catch
        {
            Device.Dispose();
            throw;
        }
    }

    public ComputeDevice Device { get; }
    public LlamaModel Model { get; }

    public void Dispose()
    {
        Model.Dispose();
        Device.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class GoldenCollection : ICollectionFixture<GoldenModelContext>
{
    public const string Name = "golden model";
}

/// <summary>
/// The engine against an independent float64 PyTorch implementation of HF LlamaForCausalLM.
/// Tolerance: 16-bit weights (bf16 values, exact in fp16 at this scale), an fp16 KV cache and fp32
/// activations give logits within <see cref="LogitTolerance"/> of the reference (measured: at most
/// 0.13 on logits of magnitude up to 50; the error grows with position as fp16-rounded keys and
/// values accumulate).
/// </summary>
[Collection(GoldenCollection.Name)]
public sealed class GoldenModelTests(GoldenModelContext ctx, ITestOutputHelper output)
{
    /// <summary>Largest allowed |logit - reference| at any position and vocabulary entry.</summary>
    public const double LogitTolerance = 0.25;

    LlamaModel Model => ctx.Model;

    static double MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++)
            m = Math.Max(m, Math.Abs(a[i] - (double)b[i]));
        return m;
    }

    float[][] PrefillLogits(int[] tokens)
    {
        var rows = new float[tokens.Length][];
        Model.PrefillLogits([new SequenceInput(0, 0, tokens)], (seq, pos, row) => rows[pos] = row.ToArray());
        return rows;
    }

    float[][] DecodeLogits(int[] tokens) => DecodeLogits(Model, tokens, slot: 1);

    /// <summary>Decodes <paramref name="tokens"/> one at a time in <paramref name="slot"/> from position 0; the logits of every step.</summary>
    internal static float[][] DecodeLogits(LlamaModel model, int[] tokens, int slot)
    {
        var rows = new float[tokens.Length][];
        for (int t = 0; t < tokens.Length; t++)
        {
            model.Decode([new DecodeRow(slot, t, tokens[t])], SelectMode.ArgMax);
            rows[t] = new float[model.Config.VocabSize];
            model.ReadLogitsRow(0, rows[t]);
        }
        return rows;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Prefill_and_decode_logits_match_the_reference_at_every_position(int caseIndex)
    {
        var c = GoldenFixture.Cases[caseIndex];
        var tokens = c.AllTokens;
        var prefill = PrefillLogits(tokens);
        var decode = DecodeLogits(tokens);
        double worstPrefill = 0, worstDecode = 0, worstBetween = 0;
        for (int t = 0; t < tokens.Length; t++)
        {
            worstPrefill = Math.Max(worstPrefill, MaxAbsDiff(prefill[t], c.Row(t)));
            worstDecode = Math.Max(worstDecode, MaxAbsDiff(decode[t], c.Row(t)));
            worstBetween = Math.Max(worstBetween, MaxAbsDiff(prefill[t], decode[t]));
        }
        output.WriteLine($"case {caseIndex}: {tokens.Length} positions, max |error| prefill {worstPrefill:G3}, decode {worstDecode:G3}, prefill vs decode {worstBetween:G3} (tolerance {LogitTolerance})");
        Assert.True(worstPrefill <= LogitTolerance, $"prefill logits off by {worstPrefill}");
        Assert.True(worstDecode <= LogitTolerance, $"decode logits off by {worstDecode}");
        Assert.True(worstBetween <= LogitTolerance, $"prefill and decode disagree by {worstBetween}");
    }

    /// <summary>
    /// Greedy tokens must equal greedy_16. A divergence is only acceptable at a step whose
    /// reference top-1/top-2 margin is below twice the logit tolerance (a near-tie that rounding
    /// may flip); after it the sequences legitimately differ, so the comparison stops there.
    /// </summary>
    internal static void AssertGreedyMatches(GoldenFixture.Case c, IReadOnlyList<int> got, ITestOutputHelper output)
    {
        for (int k = 0; k < c.Greedy16.Length; k++)
        {
            if (got[k] == c.Greedy16[k])
                continue;
            Assert.True(c.Margins[k] < 2 * LogitTolerance,
                $"step {k}: got token {got[k]}, reference {c.Greedy16[k]}, and the reference margin {c.Margins[k]} is not a near-tie (< {2 * LogitTolerance})");
            output.WriteLine($"step {k}: near-tie (margin {c.Margins[k]}) flipped; later steps not compared");
            return;
        }
    }

    [Fact]
    public void Greedy_generation_reproduces_greedy_16_for_every_case()
    {
        var gen = new Generator(Model);
        foreach (var c in GoldenFixture.Cases)
        {
            var result = gen.Generate([c.Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 16 });
            Assert.Equal(FinishReason.Length, result.Sequences[0].FinishReason);
            AssertGreedyMatches(c, result.Sequences[0].GeneratedTokens, output);
        }
    }

    [Fact]
    public void A_prompt_alone_and_inside_a_batch_of_three_gives_the_same_greedy_tokens()
    {
        var gen = new Generator(Model);
        var cases = GoldenFixture.Cases;
        // Three prompts of lengths 9, 72 and 2 decode together; the short one is in the middle.
        var batch = gen.Generate([cases[0].Prompt, cases[2].Prompt, cases[1].Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 16 });
        var alone = gen.Generate([cases[2].Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 16 });
        Assert.Equal(alone.Sequences[0].GeneratedTokens, batch.Sequences[1].GeneratedTokens);
        AssertGreedyMatches(cases[0], batch.Sequences[0].GeneratedTokens, output);
        AssertGreedyMatches(cases[2], batch.Sequences[1].GeneratedTokens, output);
        AssertGreedyMatches(cases[1], batch.Sequences[2].GeneratedTokens, output);
    }

    [Fact]
    public void A_finished_sequence_stops_while_the_others_go_on()
    {
        var gen = new Generator(Model);
        var c0 = GoldenFixture.Cases[0];
        // Stop on case 0's third greedy token: sequence 0 ends after 3 tokens, sequence 1 runs to 16.
        var result = gen.Generate([c0.Prompt, GoldenFixture.Cases[3].Prompt],
            new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 16, StopTokens = [c0.Greedy16[2]] });
        Assert.Equal(c0.Greedy16[..3], result.Sequences[0].GeneratedTokens);
        Assert.Equal(FinishReason.Stop, result.Sequences[0].FinishReason);
        if (!GoldenFixture.Cases[3].Greedy16.Contains(c0.Greedy16[2]))
        {
            Assert.Equal(16, result.Sequences[1].GeneratedTokens.Count);
            AssertGreedyMatches(GoldenFixture.Cases[3], result.Sequences[1].GeneratedTokens, output);
        }
    }

    [Fact]
    public void Same_seed_gives_the_same_sampled_tokens_and_another_seed_differs()
    {
        var gen = new Generator(Model);
        var prompts = new IReadOnlyList<int>[] { GoldenFixture.Cases[0].Prompt, GoldenFixture.Cases[1].Prompt };
        GenerationSettings Opts(ulong seed) => new()
        {
            MaxNewTokens = 12,
            Sampling = new SamplingOptions { Temperature = 1.2f, TopK = 20, TopP = 0.95f, MinP = 0.01f, RepetitionPenalty = 1.1f, Seed = seed },
        };
        var a = gen.Generate(prompts, Opts(42));
        var b = gen.Generate(prompts, Opts(42));
        var other = gen.Generate(prompts, Opts(7));
        for (int i = 0; i < 2; i++)
            Assert.Equal(a.Sequences[i].GeneratedTokens, b.Sequences[i].GeneratedTokens);
        Assert.NotEqual(a.Sequences.SelectMany(s => s.GeneratedTokens), other.Sequences.SelectMany(s => s.GeneratedTokens));
    }

    [Fact]
    public void Generation_after_warm_up_allocates_nothing_on_the_device()
    {
        var gen = new Generator(Model);
        var options = new GenerationSettings { MaxNewTokens = 6, Sampling = new SamplingOptions { Temperature = 0.8f, Seed = 1 } };
        gen.Generate([GoldenFixture.Cases[1].Prompt], options);
        long allocations = Model.Allocator.AllocationCount, frees = Model.Allocator.FreeCount, live = Model.Allocator.TotalLiveBytes;
        gen.Generate([GoldenFixture.Cases[0].Prompt, GoldenFixture.Cases[1].Prompt], options);
        gen.Generate([GoldenFixture.Cases[3].Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 6 });
        Assert.Equal(allocations, Model.Allocator.AllocationCount);
        Assert.Equal(frees, Model.Allocator.FreeCount);
        Assert.Equal(live, Model.Allocator.TotalLiveBytes);
    }

    [Fact]
    public void Allocator_totals_equal_the_memory_formula_to_the_byte()
    {
        var a = Model.Allocator;
        Assert.Equal(Model.Plan.WeightBytes, a.LiveBytes(MemoryCategory.Weights));
        Assert.Equal(Model.Plan.KvCacheBytes, a.LiveBytes(MemoryCategory.KvCache));
        Assert.Equal(Model.Plan.ActivationBytes, a.LiveBytes(MemoryCategory.Activations));
        Assert.Equal(Model.Plan.TotalBytes, a.TotalLiveBytes);
        Assert.Contains(a.LiveAllocations, x => x.Name == "lm_head.weight" && x.Bytes == 0 && x.AliasOf == "model.embed_tokens.weight");
        Assert.Contains(a.LiveAllocations, x => x.Name == "model.layers.1.mlp.up_proj.weight" && x.Category == MemoryCategory.Weights);
        Assert.Contains(a.LiveAllocations, x => x.Name == "kv_cache.v.layer1" && x.Category == MemoryCategory.KvCache);
    }

    [Fact]
    public void Bad_requests_fail_with_clear_errors()
    {
        var gen = new Generator(Model);
        var tooLong = Enumerable.Repeat(5, 120).ToArray();
        var e = Assert.Throws<EngineArgumentException>(() => gen.Generate([tooLong], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 16 }));
        Assert.Contains("exceeds --max-seq-len 128", CliNames.Message(e));
        e = Assert.Throws<EngineArgumentException>(() => gen.Generate(Enumerable.Repeat<IReadOnlyList<int>>([1, 2], 5).ToArray(), new GenerationSettings { Sampling = SamplingOptions.Greedy }));
        Assert.Contains("--max-batch-size 4", CliNames.Message(e));
        e = Assert.Throws<EngineArgumentException>(() => gen.Generate([[1, 512]], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 4 }));
        Assert.Contains("outside the vocabulary", e.Message);
        e = Assert.Throws<EngineArgumentException>(() => gen.Generate([[1, 2]], new GenerationSettings { MaxNewTokens = 4, Sampling = new SamplingOptions { TopP = 0 } }));
        Assert.Contains("--top-p", CliNames.Message(e));
        // The model still works after rejected requests.
        var ok = gen.Generate([GoldenFixture.Cases[1].Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 4 });
        Assert.Equal(GoldenFixture.Cases[1].Greedy16[..4], ok.Sequences[0].GeneratedTokens);
    }
}

/// <summary>Engine variants that need their own model instance.</summary>
public sealed class GoldenModelVariantTests(ITestOutputHelper output)
{
    [Fact]
    public void Recorded_graph_replay_gives_the_same_tokens_as_direct_launches()
    {
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var direct = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxSeqLen = 64, DecodeLaunch = DecodeLaunch.Direct });
        using var graph = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxSeqLen = 64, DecodeLaunch = DecodeLaunch.Graph });
        Assert.False(direct.UseGraphs);
        Assert.True(graph.UseGraphs);
        var prompts = new IReadOnlyList<int>[] { GoldenFixture.Cases[0].Prompt, GoldenFixture.Cases[3].Prompt };
        foreach (var sampling in new[] { SamplingOptions.Greedy, new SamplingOptions { Temperature = 0.9f, TopK = 10, RepetitionPenalty = 1.2f, Seed = 3 } })
        {
            var options = new GenerationSettings { MaxNewTokens = 10, Sampling = sampling };
            var a = new Generator(direct).Generate(prompts, options);
            var b = new Generator(graph).Generate(prompts, options);
            for (int i = 0; i < prompts.Length; i++)
                Assert.Equal(a.Sequences[i].GeneratedTokens, b.Sequences[i].GeneratedTokens);
        }
        GoldenModelTests.AssertGreedyMatches(GoldenFixture.Cases[0], new Generator(graph).Generate([GoldenFixture.Cases[0].Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 16 }).Sequences[0].GeneratedTokens, output);
    }

    /// <summary>
    /// Every decode variant computes the same function: its decode-path logits stay within the
    /// golden tolerance at every position and its greedy tokens match. fused-norm runs on the
    /// engine's CPU device; the short-attention variant on groups of 8 (4 warps of 2) with a minimum
    /// split of 3 keys, so its minimum split (one 8-key tile) differs from the baseline's and rows
    /// both shorter and longer than a tile occur.
    /// </summary>
    [Theory]
    [InlineData("fused-norm")]
    [InlineData("fused-norm-short-attn")]
    [InlineData("persistent")]
    public void Every_decode_variant_reproduces_the_reference(string variant)
    {
        var v = DecodeVariant.Parse(variant);
        using var device = v.ShortAttention ? ComputeDevice.CreateCpu(new CPUDevice(2, 4, 2)) : ComputeDevice.Create(DeviceKind.Cpu);
        var tuning = KernelTuning.For(device.Accelerator) with { AttentionMinChunk = 3 };
        using var model = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxSeqLen = 64, DecodeVariant = v, Tuning = tuning });
        Assert.Equal(variant, model.Variant.Name);
        Assert.Equal(v.ShortAttention ? 8 : 3, model.Kernels.Tuning.AttentionMinChunk);
        var c = GoldenFixture.Cases[0];
        var tokens = c.AllTokens;
        var row = new float[model.Config.VocabSize];
        double worst = 0;
        for (int t = 0; t < tokens.Length; t++)
        {
            model.Decode([new DecodeRow(0, t, tokens[t])], SelectMode.ArgMax);
            model.ReadLogitsRow(0, row);
            var reference = c.Row(t);
            for (int i = 0; i < row.Length; i++)
                worst = Math.Max(worst, Math.Abs(row[i] - (double)reference[i]));
        }
        output.WriteLine($"{variant}: {tokens.Length} decode positions, max |error| {worst:G3} (tolerance {GoldenModelTests.LogitTolerance})");
        Assert.True(worst <= GoldenModelTests.LogitTolerance, $"{variant}: decode logits off by {worst}");
        // Fewer launches per step than the baseline: 2 RMSNorms per layer and the final one are fused
        // away; the persistent variant runs each layer's five launches as one.
        Assert.Equal(2 + (v.OneLaunchPerLayer ? 1 : 5) * model.Config.NumHiddenLayers + 1 + 2, model.DecodeLaunchesPerStep);
        if (v.ShortAttention)
            return;
        var result = new Generator(model).Generate([c.Prompt, GoldenFixture.Cases[1].Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 16 });
        GoldenModelTests.AssertGreedyMatches(c, result.Sequences[0].GeneratedTokens, output);
        GoldenModelTests.AssertGreedyMatches(GoldenFixture.Cases[1], result.Sequences[1].GeneratedTokens, output);
    }

    [Fact]
    public void Bf16_weights_and_multi_warp_groups_reproduce_the_reference()
    {
        // Warps of 4 and groups of up to 16 threads exercise the cross-warp reductions that the
        // engine's default CPU shape (one warp per group) skips.
        using var device = ComputeDevice.CreateCpu(new CPUDevice(4, 4, 2));
        using var model = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxSeqLen = 64, WeightFormat = WeightFormat.Bf16, PrefillChunk = 5 });
        var c = GoldenFixture.Cases[0];
        var result = new Generator(model).Generate([c.Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 16 });
        GoldenModelTests.AssertGreedyMatches(c, result.Sequences[0].GeneratedTokens, output);
    }
}
