using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;

namespace IlgpuLlama.Tests.Model;

/// <summary>
/// Batches wider than the decode matvec kernels (up to 64 KV-cache slots): a step of B sequences runs
/// each matvec over tiles of at most 4 rows, so every sequence's logits are bit for bit those it gets
/// alone, whatever shares the batch and in whichever slot it sits.
/// </summary>
public sealed class WideBatchTests
{
    const int Steps = 3;

    /// <summary>Six different prompts (prefixes of the golden cases' tokens, of different lengths).</summary>
    static int[][] Prompts()
    {
        var tokens = GoldenFixture.Cases.SelectMany(c => c.AllTokens).ToArray();
        return Enumerable.Range(0, 6).Select(i => tokens.Skip(i * 3).Take(3 + i).ToArray()).ToArray();
    }

    /// <summary>Greedy tokens and every step's logits of <paramref name="prompts"/> decoded together in the given slots.</summary>
    static (int[][] Tokens, float[][][] Logits) Run(LlamaModel llama, int[][] prompts, int[] slots)
    {
        int n = prompts.Length, vocab = llama.Config.VocabSize;
        var tokens = prompts.Select(_ => new List<int>()).ToArray();
        var logits = prompts.Select(_ => new float[Steps + 1][]).ToArray();
        var result = llama.Prefill(prompts.Select((p, i) => new SequenceInput(slots[i], 0, p)).ToArray(), SelectMode.ArgMax);
        for (int step = 0; ; step++)
        {
            for (int i = 0; i < n; i++)
            {
                logits[i][step] = new float[vocab];
                llama.ReadLogitsRow(i, logits[i][step]);
                tokens[i].Add(result.ArgMax[i]);
            }
            if (step == Steps)
                break;
            var rows = prompts.Select((p, i) => new DecodeRow(slots[i], p.Length + step, tokens[i][^1])).ToArray();
            result = llama.Decode(rows, SelectMode.ArgMax);
        }
        return (tokens.Select(t => t.ToArray()).ToArray(), logits);
    }

    [Theory]
    [InlineData("baseline")]
    [InlineData("fused-norm")]
    public void A_sequence_decodes_bit_for_bit_the_same_alone_and_in_a_batch_of_six(string variant)
    {
        var prompts = Prompts();
        var v = DecodeVariant.Parse(variant);
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var wide = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxBatchSize = 7, MaxSeqLen = 24, DecodeVariant = v });
        // Slots out of order and one left free, so rows and slots differ.
        var (batchTokens, batchLogits) = Run(wide, prompts, [6, 0, 3, 1, 5, 2]);
        using var alone = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 24, DecodeVariant = v });
        for (int i = 0; i < prompts.Length; i++)
        {
            var (t, l) = Run(alone, [prompts[i]], [0]);
            Assert.Equal(t[0], batchTokens[i]);
            for (int s = 0; s <= Steps; s++)
                Assert.True(l[0][s].AsSpan().SequenceEqual(batchLogits[i][s]), $"sequence {i}, step {s}: logits differ between alone and in the batch of six");
        }
    }

    [Fact]
    public void Batches_of_one_to_sixty_four_are_accepted_and_the_memory_formula_follows_them()
    {
        var config = LlamaConfig.Preset("llama-3.2-1b");
        var tuning = new KernelTuning();
        foreach (int b in new[] { 1, 5, 17, 64 })
        {
            var plan = new MemoryPlan(config, WorkspaceShape.For(config, b, 256, tuning), WeightFormat.Fp16);
            Assert.Equal(b * 256L * 32_768, plan.KvCacheBytes);
        }
        var e = Assert.Throws<EngineArgumentException>(() => WorkspaceShape.For(config, 65, 256, tuning));
        Assert.Contains("between 1 and 64", e.Message);
        var chunk = Assert.Throws<EngineArgumentException>(() => WorkspaceShape.For(config, 8, 256, tuning, prefillTokens: 4));
        Assert.Equal(EngineParameter.PrefillChunk, chunk.Parameter);
    }

    /// <summary>
    /// Past the kernels' 32-bit cache offsets a context does not fit, whatever the memory: the default
    /// context is then the longest below that limit, not a load error (an fp32 cache halves it).
    /// </summary>
    [Theory]
    [InlineData("fp16", 32767)]
    [InlineData("fp32", 16383)]
    public void The_default_context_stays_within_the_32_bit_cache_offsets(string cache, int limit)
    {
        var config = LlamaConfig.Preset("llama-3.1-8b");
        var tuning = new KernelTuning();
        var options = new EngineOptions { MaxBatchSize = 64, KvCacheType = KvCacheTypes.Parse(cache)!.Value };
        int seq = LlamaModel.LongestContext(long.MaxValue / 4, 131072, config, options, tuning, WeightFormat.Q4_0);
        Assert.True(seq <= limit && seq > limit - 256, $"{seq} positions, limit {limit}");
        WorkspaceShape.For(config, 64, seq, tuning, kvCache: options.KvCacheType);
    }

    [Theory]
    [InlineData("llama-3.2-1b", "fp16", 4, 16_000_000_000L, 8192)]
    [InlineData("llama-3.1-8b", "fp16", 1, 16_000_000_000L, -1)]
    [InlineData("llama-3.1-8b", "q8_0", 4, 16_000_000_000L, 8192)]
    [InlineData("llama-3.1-8b", "q8_0", 16, 16_000_000_000L, 0)]
    [InlineData("llama-3.2-1b", "fp16", 64, 80_000_000_000L, 0)]
    public void The_default_context_is_the_longest_that_fits_capped_at_8192(string preset, string dtype, int batch, long available, int expected)
    {
        var config = LlamaConfig.Preset(preset);
        var tuning = new KernelTuning();
        var format = WeightFormat.Parse(dtype);
        var options = new EngineOptions { MaxBatchSize = batch };
        int seq = LlamaModel.LongestContext(available, 8192, config, options, tuning, format);
        long Bytes(int s) => new MemoryPlan(config, WorkspaceShape.For(config, batch, s, tuning), format).TotalBytes;
        if (expected == -1)
        {
            // fp16 8B does not fit 16 GB at any context: the cap comes back and loading fails with the out-of-memory message.
            Assert.Equal(8192, seq);
            Assert.True(Bytes(1) > available);
            return;
        }
        if (expected > 0)
            Assert.Equal(expected, seq);
        Assert.True(Bytes(seq) <= available, $"{seq} positions need {Bytes(seq)} B");
        if (seq < 8192)
        {
            Assert.Equal(0, seq % 256);
            Assert.True(Bytes(seq + 256) > available, $"{seq + 256} positions would fit too");
        }
    }
}
