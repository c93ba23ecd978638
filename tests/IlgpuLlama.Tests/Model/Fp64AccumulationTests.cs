using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Engine.Serving;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Model;

/// <summary>The evaluation configuration: the golden model in its own bf16 weights, an fp32 KV cache and float64 accumulation.</summary>
public sealed class Fp64AccumulationModelContext() : GoldenModelFixture(Options)
{
    public static EngineOptions Options { get; } = Fp32CacheModelContext.Options with { Accumulation = Accumulation.Fp64 };
}

[CollectionDefinition(Name)]
public sealed class Fp64AccumulationCollection : ICollectionFixture<Fp64AccumulationModelContext>
{
    public const string Name = "golden model, bf16 weights, fp32 KV cache, float64 accumulation";
}

/// <summary>
/// Issue 22's bound: with exact weights, an fp32 KV cache and float64 sums in the matmuls and
/// RMSNorm (<see cref="Accumulation.Fp64"/>), log-probabilities within 1e-4 of the float64
/// reference on the golden model, at every position and over the whole vocabulary, by prefill and
/// by decode, and as a request gets them back. fp32 sums leave 1e-4 to 2.2e-4 there
/// (<see cref="Fp32CacheTests"/>); what is left is fp32 storage of the activations between kernels.
/// </summary>
[Collection(Fp64AccumulationCollection.Name)]
public sealed class Fp64AccumulationTests(Fp64AccumulationModelContext ctx, ITestOutputHelper output)
{
    /// <summary>Issue 22's bound on |logprob - reference|.</summary>
    public const double LogprobTolerance = 1e-4;

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Prefill_and_decode_logprobs_are_within_1e_4_of_the_float64_reference(int caseIndex)
    {
        var c = GoldenFixture.Cases[caseIndex];
        var tokens = c.AllTokens;
        var prefill = new float[tokens.Length][];
        ctx.Model.PrefillLogits([new SequenceInput(0, 0, tokens)], (_, pos, row) => prefill[pos] = row.ToArray());
        var decode = GoldenModelTests.DecodeLogits(ctx.Model, tokens, slot: 1);
        double lpPrefill = Fp32CacheTests.LogprobError(prefill, c), lpDecode = Fp32CacheTests.LogprobError(decode, c);
        // Decode runs the prefill's float64 kernels one row per step (the fp32 matvecs would differ by 1e-4).
        double apart = prefill.Zip(decode, (p, d) => p.Zip(d, (a, b) => Math.Abs(a - b)).Max()).Max();
        output.WriteLine($"case {caseIndex}: {tokens.Length} positions; max |logprob error| prefill {lpPrefill:G3}, decode {lpDecode:G3}; " +
            $"max |logit error| prefill {Fp32CacheTests.LogitError(prefill, c):G3}, decode {Fp32CacheTests.LogitError(decode, c):G3}; max |prefill - decode logit| {apart:G3}");
        Assert.True(lpPrefill < LogprobTolerance, $"prefill logprobs off by {lpPrefill}");
        Assert.True(lpDecode < LogprobTolerance, $"decode logprobs off by {lpDecode}");
        Assert.True(apart < 1e-5, $"decode logits differ from prefill's by {apart}: decode did not run the float64 kernels");
        Assert.Equal(c.Greedy16, Enumerable.Range(c.Prompt.Length - 1, c.Greedy16.Length).Select(t => Fp32CacheTests.ArgMax(decode[t])));
    }

    [Fact]
    public void The_logprobs_a_request_gets_are_within_1e_4()
    {
        double worst = Fp32CacheTests.ReturnedLogprobError(ctx.Model, out int compared);
        output.WriteLine($"{compared} logprobs (prompt and generated, chosen and top {TokenLogprobs.MaxTop}, 2 choices): max |error| {worst:G3}");
        Assert.True(worst < LogprobTolerance, $"returned logprobs off by {worst}");
    }
}

/// <summary>Float64 accumulation takes the baseline decode variant; another is refused at load, naming the setting.</summary>
public sealed class Fp64AccumulationVariantTests
{
    [Fact]
    public void A_fused_variant_with_float64_accumulation_is_refused_before_anything_is_allocated()
    {
        using var device = IlgpuLlama.Device.ComputeDevice.Create(IlgpuLlama.Device.DeviceKind.Cpu);
        var e = Assert.Throws<EngineArgumentException>(() => LlamaModel.Load(device, GoldenFixture.Directory,
            Fp64AccumulationModelContext.Options with { DecodeVariant = DecodeVariant.FusedNorm, MaxSeqLen = 16 }));
        Assert.Equal(EngineParameter.Accumulation, e.Parameter);
        Assert.Contains("takes the baseline decode variant, and the fused-norm variant was asked for", e.Message);
    }

    [Fact]
    public void An_undefined_accumulation_or_cache_type_from_a_library_caller_is_refused_by_name()
    {
        using var device = IlgpuLlama.Device.ComputeDevice.Create(IlgpuLlama.Device.DeviceKind.Cpu);
        var e = Assert.Throws<EngineArgumentException>(() => LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { Accumulation = (Accumulation)7, MaxSeqLen = 16 }));
        Assert.Equal(EngineParameter.Accumulation, e.Parameter);
        Assert.Equal("Accumulation 7 is not an accumulation; use one of fp32, fp64", e.Message);
        e = Assert.Throws<EngineArgumentException>(() => LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { KvCacheType = (KvCacheType)5, MaxSeqLen = 16 }));
        Assert.Equal(EngineParameter.KvCacheType, e.Parameter);
        Assert.Contains("KvCacheType 5 is not a KV-cache type; use one of fp16, fp32", e.Message);
    }
}

/// <summary>The evaluation configuration from the command line: --dtype bf16 --kv-cache-dtype fp32 --accumulate fp64.</summary>
public sealed class Fp64AccumulationCliTests
{
    [Theory]
    [InlineData("prefill")]
    [InlineData("decode")]
    public void The_logits_command_with_float64_accumulation_is_within_1e_4(string mode)
    {
        var c = GoldenFixture.Cases[1];
        string dir = IlgpuLlama.Tests.Cli.CliHarness.TempDir();
        try
        {
            var (err, npy, error) = Fp32CacheCliTests.GoldenLogits(c, mode, dir, "--accumulate", "fp64");
            Assert.Contains("float64 accumulation", err);
            Assert.True(error < Fp64AccumulationTests.LogprobTolerance, $"{mode}: logprobs off by {error}");
            // compare-logits reports the same figure against the golden file, as a user (or the device run) checks it.
            var cmp = IlgpuLlama.Tests.Cli.CliHarness.Run("compare-logits", "--ours", npy, "--reference", Path.Combine(GoldenFixture.Directory, "logits_case1.npy"), "--json");
            Assert.True(cmp.ExitCode == 0, cmp.Err + cmp.Out);
            double reported = System.Text.Json.JsonDocument.Parse(cmp.Out).RootElement.GetProperty("max_logprob_error").GetDouble();
            Assert.Equal(error, reported, 1e-9);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Generate_reports_it_and_a_fused_variant_is_refused_before_loading()
    {
        var g = IlgpuLlama.Tests.Cli.CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--tokens", "1,2,3", "--max-new-tokens", "2", "--dtype", "bf16",
            "--accumulate", "fp64", "--max-seq-len", "16", "--device", "cpu", "--json");
        Assert.True(g.ExitCode == 0, g.Err);
        Assert.Equal("fp64", System.Text.Json.JsonDocument.Parse(g.Out).RootElement.GetProperty("memory").GetProperty("accumulate").GetString());
        var p = IlgpuLlama.Tests.Cli.CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--tokens", "1,2,3", "--accumulate", "fp64", "--decode-variant", "fused-norm");
        Assert.NotEqual(0, p.ExitCode);
        Assert.Contains("--accumulate fp64 runs the decode layers as the prefill does and takes --decode-variant baseline, not fused-norm", p.Err);
        Assert.DoesNotContain("loading", p.Err);
        var bad = IlgpuLlama.Tests.Cli.CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--tokens", "1,2,3", "--accumulate", "fp128");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("fp128", bad.Err);
    }
}

/// <summary>
/// Issue 22's bound through the HTTP API: the golden model served with --dtype bf16 --kv-cache-dtype
/// fp32 --accumulate fp64, given a byte-level tokenizer of exactly its 512 ids (256 bytes, then Llama
/// 3's 256 special tokens) so the server can name tokens; a completions request with the golden
/// prompt as ids, echo and logprobs returns every prompt and generated token's log-probability
/// within 1e-4 of the float64 reference, and the reference's greedy tokens.
/// </summary>
public sealed class Fp64AccumulationServerTests
{
    [Fact]
    public async Task Completions_echo_logprobs_are_within_1e_4_of_the_float64_reference()
    {
        string dir = IlgpuLlama.Tests.Cli.CliHarness.TempDir();
        try
        {
            foreach (var f in new[] { "config.json", "model.safetensors" })
                File.Copy(Path.Combine(GoldenFixture.Directory, f), Path.Combine(dir, f));
            IlgpuLlama.Text.TiktokenModelWriter.Write(Path.Combine(dir, "tokenizer.model"), Enumerable.Range(0, 256).Select(b => new[] { (byte)b }).ToArray());
            using var engine = LlamaEngine.Load(dir, new LlamaEngineOptions { Device = IlgpuLlama.Device.DeviceKind.Cpu, Engine = Fp64AccumulationModelContext.Options with { MaxBatchSize = 1 } });
            await using var server = await IlgpuLlama.Server.OpenAiServer.StartAsync(engine, new IlgpuLlama.Server.ServerOptions { Port = 0, ModelId = "golden" });
            using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };
            var c = GoldenFixture.Cases[0];
            var body = System.Text.Json.JsonSerializer.Serialize(new
            {
                model = "golden", prompt = c.Prompt, max_tokens = c.Greedy16.Length, temperature = 0, echo = true, logprobs = 1, ignore_eos = true,
            });
            using var response = await http.PostAsync("/v1/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
            string text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, text);
            var lp = System.Text.Json.JsonDocument.Parse(text).RootElement.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("token_logprobs");
            Assert.Equal(c.AllTokens.Length, lp.GetArrayLength());
            Assert.Equal(System.Text.Json.JsonValueKind.Null, lp[0].ValueKind);
            double worst = 0;
            for (int i = 1; i < c.AllTokens.Length; i++)
            {
                double reference = Float64Oracle.LogSoftmax(c.Row(i - 1))[c.AllTokens[i]];
                worst = Math.Max(worst, Math.Abs(lp[i].GetDouble() - reference));
            }
            Assert.True(worst < Fp64AccumulationTests.LogprobTolerance, $"logprobs through HTTP off by {worst}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
