using System.Text.Json;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Cli;

/// <summary>
/// What tools/device/gpu_check.py reads from the CLI beyond the figures: the launch counts its ncu step
/// turns into --launch-skip, and bench kernels' back-to-back timing of the matvec table.
/// </summary>
public sealed class DeviceRunHookTests
{
    static (long Launches, int PerStep, int Graphs) Counts(int newTokens, string variant)
    {
        var c = GoldenFixture.Cases[1];
        var r = CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--tokens", string.Join(",", c.Prompt), "--temperature", "0",
            "--max-new-tokens", newTokens.ToString(System.Globalization.CultureInfo.InvariantCulture), "--ignore-eos", "--max-seq-len", "64",
            "--device", "cpu", "--decode-variant", variant, "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        return (root.GetProperty("kernel_launches").GetInt64(), root.GetProperty("decode_launches_per_step").GetInt32(), root.GetProperty("recorded_graphs").GetInt32());
    }

    [Theory]
    [InlineData("baseline")]
    [InlineData("fused-norm")]
    [InlineData("persistent")]
    public void Generate_json_counts_launches_so_that_two_more_tokens_are_two_more_decode_steps(string variant)
    {
        var four = Counts(4, variant);
        var six = Counts(6, variant);
        Assert.True(four.PerStep > 0);
        Assert.Equal(four.PerStep, six.PerStep);
        // The ncu step's offset rests on this: total = prefill + (new tokens - 1) x per step.
        Assert.Equal(2L * four.PerStep, six.Launches - four.Launches);
        Assert.True(four.Launches - 3L * four.PerStep > 0, "prefill launches");
        Assert.Equal(0, four.Graphs); // no graphs on the CPU accelerator by default
    }

    [Fact]
    public void Back_to_back_timing_keeps_validation_and_says_how_it_timed()
    {
        var r = CliHarness.Run("bench", "kernels", "--device", "cpu", "--shapes", "tiny", "--filter", "matvec_fp16*b1", "--back-to-back",
            "--repeats", "3", "--warmup", "1", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        Assert.StartsWith("back to back:", doc.RootElement.GetProperty("timing").GetString());
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
        Assert.NotEmpty(rows);
        Assert.All(rows, row =>
        {
            Assert.True(row.GetProperty("validation").GetProperty("passed").GetBoolean());
            Assert.True(row.GetProperty("time_us").GetDouble() > 0);
            // One timing shared by the repeats: the median equals the minimum.
            Assert.Equal(row.GetProperty("time_us").GetDouble(), row.GetProperty("min_time_us").GetDouble());
        });
    }
}
