using System.Text.Json;
using IlgpuLlama.Cli.Commands;
using IlgpuLlama.IO;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Cli;

/// <summary>The model commands end to end through the CLI entry point, on the CPU accelerator.</summary>
public sealed class ModelCommandTests
{
    static string Tokens(IEnumerable<int> ids) => string.Join(",", ids);

    [Fact]
    public void Memory_reproduces_the_llama_3_2_1b_worked_example()
    {
        var r = CliHarness.Run("memory", "--model", "llama-3.2-1b", "--batch", "4", "--seq", "256", "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal(1_235_814_400, root.GetProperty("parameter_count").GetInt64());
        Assert.Equal(2_471_628_800, root.GetProperty("weight_bytes").GetInt64());
        Assert.Equal(32_768, root.GetProperty("kv_cache_bytes_per_token").GetInt64());
        Assert.Equal(33_554_432, root.GetProperty("kv_cache_bytes").GetInt64());
        long activations = root.GetProperty("activation_bytes").GetInt64();
        Assert.Equal(2_471_628_800 + 33_554_432 + activations, root.GetProperty("total_bytes").GetInt64());
        Assert.Contains("2.00 GB", root.GetProperty("rule_of_thumb").GetString());
        Assert.Contains(root.GetProperty("fits").EnumerateArray(), f => f.GetProperty("device").GetString()!.StartsWith("P100") && f.GetProperty("fits").GetBoolean());
    }

    [Fact]
    public void Memory_allocate_matches_the_formula_to_the_byte()
    {
        var r = CliHarness.Run("memory", "--model", GoldenFixture.Directory, "--batch", "2", "--seq", "64", "--allocate", "--device", "cpu", "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        var allocated = root.GetProperty("allocated");
        Assert.Equal(0, allocated.GetProperty("difference_from_formula").GetInt64());
        Assert.Equal(root.GetProperty("weight_bytes").GetInt64(), allocated.GetProperty("weights").GetInt64());
        Assert.Equal(root.GetProperty("kv_cache_bytes").GetInt64(), allocated.GetProperty("kv_cache").GetInt64());
        Assert.Equal(root.GetProperty("activation_bytes").GetInt64(), allocated.GetProperty("activations").GetInt64());
    }

    [Fact]
    public void Generate_json_on_the_golden_model_reproduces_greedy_16()
    {
        var c = GoldenFixture.Cases[1];
        var r = CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--tokens", Tokens(c.Prompt), "--temperature", "0",
            "--max-new-tokens", "16", "--ignore-eos", "--max-seq-len", "64", "--device", "cpu", "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Out);
        var seq = doc.RootElement.GetProperty("sequences")[0];
        Assert.Equal(c.Prompt, seq.GetProperty("prompt_tokens").EnumerateArray().Select(e => e.GetInt32()));
        GoldenModelTests.AssertGreedyMatches(c, seq.GetProperty("generated_tokens").EnumerateArray().Select(e => e.GetInt32()).ToList(), new NullOutput());
        Assert.True(doc.RootElement.GetProperty("decode_tokens_per_second").GetDouble() > 0);
        Assert.Equal(doc.RootElement.GetProperty("memory").GetProperty("total_bytes").GetInt64(),
            doc.RootElement.GetProperty("memory").GetProperty("allocated_total").GetInt64());
    }

    [Theory]
    [InlineData("prefill")]
    [InlineData("decode")]
    public void Logits_on_the_golden_model_reproduce_the_reference(string mode)
    {
        var c = GoldenFixture.Cases[0];
        string dir = CliHarness.TempDir();
        try
        {
            string file = Path.Combine(dir, "logits.npy");
            var r = CliHarness.Run("logits", "--model", GoldenFixture.Directory, "--tokens", Tokens(c.AllTokens), "--out", file, "--mode", mode, "--device", "cpu");
            Assert.Equal(0, r.ExitCode);
            var (data, shape) = NpyFile.Read(file);
            Assert.Equal(new long[] { c.AllTokens.Length, 512 }, shape);
            var report = CompareLogitsCommand.Compare(data, shape, c.Logits, c.Shape);
            Assert.True(report.MaxAbsError <= GoldenModelTests.LogitTolerance, $"max error {report.MaxAbsError}");
            Assert.Equal(report.Positions, report.AllTop1Agreement);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Compare_logits_reports_the_mean_KL_divergence_of_the_reference_to_ours()
    {
        // Two positions over 3 tokens: identical rows (KL 0) and one whose distribution is known.
        float[] reference = [1, 2, 3, 0, 0, 0];
        float[] ours = [1, 2, 3, 0, (float)Math.Log(2), 0];
        var report = CompareLogitsCommand.Compare(ours, [2, 3], reference, [2, 3], tolerance: 10);
        // p = (1/3, 1/3, 1/3), q = (1/4, 1/2, 1/4): KL = 1/3 (ln 4/3 + ln 2/3 + ln 4/3).
        double expected = (2 * Math.Log(4.0 / 3) + Math.Log(2.0 / 3)) / 3 / 2;
        Assert.Equal(expected, report.MeanKlDivergence!.Value, 6);
        Assert.Equal(0, CompareLogitsCommand.Compare(reference, [2, 3], reference, [2, 3]).MeanKlDivergence!.Value, 12);
    }

    [Fact]
    public void Bad_model_input_fails_with_one_clear_line()
    {
        var r = CliHarness.Run("generate", "--model", "/nonexistent/model", "--tokens", "1,2", "--device", "cpu");
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("error: --model '/nonexistent/model' is not a directory", r.Err.Trim());
        r = CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--tokens", "1,x", "--device", "cpu");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("is not a comma-separated list of token ids", r.Err);
        r = CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--tokens", "1,2", "--max-new-tokens", "300", "--device", "cpu");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("exceeds --max-seq-len 256", r.Err);
        r = CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--tokens", "1,2", "--temperature", "-1", "--device", "cpu");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--temperature", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'), l => l.StartsWith("error:"));
    }

    sealed class NullOutput : Xunit.Abstractions.ITestOutputHelper
    {
        public void WriteLine(string message)
        {
        }

        public void WriteLine(string format, params object[] args)
        {
        }
    }
}
