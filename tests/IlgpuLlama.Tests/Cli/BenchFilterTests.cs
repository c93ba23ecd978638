using System.Text.Json;

namespace IlgpuLlama.Tests.Cli;

/// <summary>bench kernels --filter and --list on the CPU accelerator's tiny shapes.</summary>
public sealed class BenchFilterTests
{
    static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    [Fact]
    public void List_prints_case_names_and_a_glob_keeps_only_the_cases_it_matches()
    {
        var all = CliHarness.Run("bench", "kernels", "--device", "cpu", "--shapes", "tiny", "--list");
        Assert.True(all.ExitCode == 0, all.Err);
        var names = Lines(all.Out);
        Assert.True(names.Length > 20, all.Out);
        Assert.Contains("rmsnorm_fp16 4x96 b4", names);

        var glob = CliHarness.Run("bench", "kernels", "--device", "cpu", "--shapes", "tiny", "--list", "--filter", "MATVEC_fp16*b4");
        Assert.True(glob.ExitCode == 0, glob.Err);
        var kept = Lines(glob.Out);
        Assert.Equal(names.Where(n => n.StartsWith("matvec_fp16 ", StringComparison.Ordinal) && n.EndsWith(" b4", StringComparison.Ordinal)), kept);
        Assert.NotEmpty(kept);

        // Substrings, repeated and comma-separated, keep the union.
        var union = CliHarness.Run("bench", "kernels", "--device", "cpu", "--shapes", "tiny", "--list", "--filter", "lm head,topk", "--filter", "kv_append");
        Assert.Equal(names.Where(n => n.Contains("lm head", StringComparison.Ordinal) || n.StartsWith("topk", StringComparison.Ordinal) || n.StartsWith("kv_append", StringComparison.Ordinal)),
            Lines(union.Out));
    }

    [Fact]
    public void A_filtered_run_benchmarks_only_the_matching_cases()
    {
        var r = CliHarness.Run("bench", "kernels", "--device", "cpu", "--shapes", "tiny", "--filter", "rmsnorm_fp16", "--json", "--repeats", "1", "--warmup", "0");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
        Assert.Equal(3, rows.Count);
        Assert.All(rows, row => Assert.Equal("rmsnorm_fp16", row.GetProperty("kernel").GetString()));
        Assert.All(rows, row => Assert.True(row.GetProperty("validation").GetProperty("passed").GetBoolean()));
    }

    [Fact]
    public void A_filter_that_matches_nothing_is_one_error_saying_how_to_see_the_names()
    {
        var r = CliHarness.Run("bench", "kernels", "--device", "cpu", "--shapes", "tiny", "--filter", "no_such_kernel*");
        Assert.Equal(1, r.ExitCode);
        string line = Assert.Single(Lines(r.Err));
        Assert.StartsWith("error: --filter 'no_such_kernel*' matches none of the", line);
        Assert.Contains("bench kernels --list", line);
        Assert.Equal("", r.Out);
    }
}
