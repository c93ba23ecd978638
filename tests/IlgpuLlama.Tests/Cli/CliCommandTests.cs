using System.Text.Json;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Tests.Cli;

public sealed class CliCommandTests
{
    [Fact]
    public void Info_json_lists_the_cpu_accelerator()
    {
        var r = CliHarness.Run("info", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.False(string.IsNullOrEmpty(root.GetProperty("ilgpu_version").GetString()));
        Assert.False(string.IsNullOrEmpty(root.GetProperty("dotnet_version").GetString()));
        var accelerators = root.GetProperty("accelerators").EnumerateArray().ToList();
        var cpu = Assert.Single(accelerators, a => a.GetProperty("kind").GetString() == "cpu");
        Assert.True(cpu.GetProperty("warp_size").GetInt32() > 0);
        Assert.True(cpu.GetProperty("memory_bytes").GetInt64() > 0);
        Assert.True(cpu.GetProperty("multiprocessors").GetInt32() > 0);
    }

    [Fact]
    public void Info_prints_a_table()
    {
        var r = CliHarness.Run("info");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("ILGPU", r.Out);
        Assert.Contains("cpu", r.Out);
    }

    [Fact]
    public void Ptx_writes_every_catalog_kernel_with_128_bit_matvec_loads()
    {
        string dir = CliHarness.TempDir();
        try
        {
            var r = CliHarness.Run("ptx", "--arch", "sm_60", "--out", dir);
            Assert.True(r.ExitCode == 0, r.Err);
            foreach (var entry in KernelCatalog.All)
            {
                string path = Path.Combine(dir, entry.Name + ".ptx");
                Assert.True(File.Exists(path), $"{path} missing");
                string ptx = File.ReadAllText(path);
                Assert.Contains(".target sm_60", ptx);
                Assert.Contains(".version 7.8", ptx);
                Assert.Contains(entry.Name, r.Out);
                if (entry.Name.StartsWith("matvec", StringComparison.Ordinal))
                    Assert.Matches(@"ld\.global(\.nc)?\.v4\.", ptx);
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("--bogus")]
    [InlineData("info", "--no-such-option")]
    [InlineData("no-such-command")]
    [InlineData("ptx", "--arch", "sm_52", "--out", "x")]
    [InlineData("ptx")]
    [InlineData("bench", "kernels", "--device", "tpu")]
    [InlineData("bench", "kernels", "--repeats", "0")]
    [InlineData("bench", "kernels", "--json", "--csv")]
    public void Usage_errors_exit_2_with_a_message_on_stderr(params string[] args)
    {
        var r = CliHarness.Run(args);
        Assert.Equal(2, r.ExitCode);
        Assert.NotEmpty(r.Err.Trim());
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void Expected_failures_print_one_error_line_and_exit_1()
    {
        string missing = Path.Combine(Path.GetTempPath(), "ilgpu-llama-no-such-dir-" + Guid.NewGuid().ToString("N"));
        var r = CliHarness.Run("ptxas-report", "--dir", missing);
        Assert.Equal(1, r.ExitCode);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(missing, lines[0]);
    }

    [Fact]
    public void Verbose_shows_the_stack_trace()
    {
        string missing = Path.Combine(Path.GetTempPath(), "ilgpu-llama-no-such-dir-" + Guid.NewGuid().ToString("N"));
        var r = CliHarness.Run("ptxas-report", "--dir", missing, "--verbose");
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("error: ", r.Err);
        Assert.Contains("   at ", r.Err);
    }

    [Fact]
    public void Bench_kernels_on_cpu_tiny_validates_every_kernel_family()
    {
        var r = CliHarness.Run("bench", "kernels", "--device", "cpu", "--shapes", "tiny", "--json", "--repeats", "1", "--warmup", "0");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal("cpu", root.GetProperty("device_kind").GetString());
        Assert.Equal("tiny", root.GetProperty("shapes").GetString());
        Assert.True(root.GetProperty("copy_bandwidth").GetProperty("gb_per_s").GetDouble() > 0);
        var rows = root.GetProperty("rows").EnumerateArray().ToList();
        var families = rows.Select(x => x.GetProperty("family").GetString()).ToHashSet();
        foreach (var family in KernelCatalog.All.Select(e => e.Family).Distinct())
            Assert.Contains(family, families);
        foreach (var row in rows)
        {
            string what = $"{row.GetProperty("kernel").GetString()} {row.GetProperty("shape").GetString()} b{row.GetProperty("batch").GetInt32()}";
            var v = row.GetProperty("validation");
            Assert.True(v.GetProperty("passed").GetBoolean(), $"{what}: {v.GetProperty("report").GetString()}");
            Assert.False(row.GetProperty("skipped").GetBoolean(), what);
            Assert.True(row.GetProperty("time_us").GetDouble() > 0, what);
            Assert.True(row.GetProperty("bytes").GetInt64() > 0, what);
        }
        // Decode matvec at batch 1 and 4, both prefill and decode attention.
        Assert.Contains(rows, x => x.GetProperty("kernel").GetString() == "matvec_fp16");
        Assert.Contains(rows, x => x.GetProperty("kernel").GetString()!.StartsWith("matvec_", StringComparison.Ordinal) && x.GetProperty("batch").GetInt32() == 4);
        Assert.Contains(rows, x => x.GetProperty("shape").GetString()!.StartsWith("prefill", StringComparison.Ordinal));
    }

    [Fact]
    public void Bench_kernels_validates_the_quantised_weight_reading_kernels()
    {
        var r = CliHarness.Run("bench", "kernels", "--device", "cpu", "--shapes", "tiny", "--dtype", "q4_0", "--json", "--repeats", "1", "--warmup", "0");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
        Assert.Equal(["decode_layer", "gemm", "matvec", "precise"], rows.Select(x => x.GetProperty("family").GetString()).Distinct().Order());
        Assert.All(rows, row => Assert.True(row.GetProperty("validation").GetProperty("passed").GetBoolean(), row.GetProperty("validation").GetProperty("report").GetString()));
        Assert.Contains(rows, x => x.GetProperty("kernel").GetString() == "gemm_q4_0");
        Assert.Contains(rows, x => x.GetProperty("kernel").GetString() == "matvec_swiglu_norm_q4_0" && x.GetProperty("batch").GetInt32() == 4);
    }
}
