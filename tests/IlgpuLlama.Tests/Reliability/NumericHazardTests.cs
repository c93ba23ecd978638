using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>
/// Deterministic numeric hazards (issue 17, defect 7). The kernels address one layer's KV cache
/// with 32-bit offsets, so a plan whose layer cache holds 2^31 values or more is refused before
/// anything is allocated, naming both parameters and the longest context that fits. (K/V values
/// beyond fp16 saturate: LayerKernelTests and MatVecTests.)
/// </summary>
public sealed class NumericHazardTests
{
    [Fact]
    public void A_kv_cache_beyond_32_bit_offsets_is_refused_at_plan_time()
    {
        var config = LlamaConfig.Preset("llama-3.1-8b");
        var e = Assert.Throws<EngineArgumentException>(() => WorkspaceShape.For(config, 64, 131072, new KernelTuning()));
        Assert.Equal(EngineParameter.MaxSeqLen, e.Parameter);
        Assert.Contains("8,589,934,592 values", e.Message);
        Assert.Contains("32-bit offsets", e.Message);
        Assert.Contains("at most 32,767 positions", e.Message);
        // The largest plan at batch 64 is accepted, as are long contexts at small batches.
        WorkspaceShape.For(config, 64, 32767, new KernelTuning());
        WorkspaceShape.For(config, 4, 131072, new KernelTuning());
        Assert.Throws<EngineArgumentException>(() => WorkspaceShape.For(config, 64, 32768, new KernelTuning()));
        // An fp32 cache is two 16-bit words per value: half the positions.
        var fp32 = Assert.Throws<EngineArgumentException>(() => WorkspaceShape.For(config, 64, 16384, new KernelTuning(), kvCache: KvCacheType.Fp32));
        Assert.Contains("beyond the 1,073,741,823 fp32 values", fp32.Message);
        Assert.Contains("at most 16,383 positions", fp32.Message);
        WorkspaceShape.For(config, 64, 16383, new KernelTuning(), kvCache: KvCacheType.Fp32);
    }

    [Fact]
    public void The_memory_command_names_its_own_flags_for_the_offset_limit()
    {
        var r = CliHarness.Run("memory", "--model", "llama-3.1-8b", "--batch", "64", "--seq", "131072");
        Assert.Equal(1, r.ExitCode);
        var line = Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: --batch 64 x --seq 131072 gives one layer's KV cache", line);
        Assert.Contains("lower --batch or --seq", line);
        Assert.Equal("", r.Out);

        // --allocate loads through the engine; its refusal names the same flags (and an fp32 cache halves the limit).
        var allocate = CliHarness.Run("memory", "--model", "llama-3.1-8b", "--batch", "64", "--seq", "20000", "--kv-cache-dtype", "fp32", "--allocate", "--device", "cpu");
        Assert.Equal(1, allocate.ExitCode);
        Assert.Contains("error: --batch 64 x --seq 20000 gives one layer's KV cache", allocate.Err);
        Assert.Contains("fp32 values", allocate.Err);
        Assert.DoesNotContain("--max-batch-size", allocate.Err);
    }
}

/// <summary>The generation loop's context check in 64 bits: prompt + max new tokens near 2^31 wrapped negative and passed.</summary>
[Collection(GoldenCollection.Name)]
public sealed class GenerationLengthOverflowTests(GoldenModelContext ctx)
{
    [Theory]
    [InlineData(int.MaxValue)]
    [InlineData(int.MaxValue - 3)]
    public void Max_new_tokens_near_2_to_the_31_is_refused_before_decoding(int maxNewTokens)
    {
        var gen = new Generator(ctx.Model);
        var e = Assert.Throws<EngineArgumentException>(() => gen.Generate([GoldenFixture.Cases[0].Prompt], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = maxNewTokens }));
        Assert.Equal(EngineParameter.MaxSeqLen, e.Parameter);
        Assert.Contains($"{maxNewTokens} new tokens", e.Message);
    }
}
