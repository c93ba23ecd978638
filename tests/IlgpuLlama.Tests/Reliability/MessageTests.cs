using System.Diagnostics;
using IlgpuLlama.Engine;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>Messages that used to mislead, the demo's build (interrupted, truncated, unwritable), and memory's CPU figures.</summary>
public sealed class MessageTests : IDisposable
{
    readonly string _dir = CliHarness.TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static string OneErrorLine(CliHarness.Result r, int exitCode = 1)
    {
        Assert.True(r.ExitCode == exitCode, $"exit {r.ExitCode}\n{r.Err}");
        string line = Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.DoesNotContain("   at ", r.Err);
        return line;
    }

    [Theory]
    [InlineData("memory")]
    [InlineData("bench")]
    public void A_missing_model_path_is_not_called_an_unknown_preset(string command)
    {
        string[] prefix = command == "bench" ? ["bench", "e2e"] : ["memory"];
        foreach (string path in new[] { "/nonexistent", "./no-such-model", "weights/Llama-9" })
        {
            string line = OneErrorLine(CliHarness.Run([.. prefix, "--model", path, "--device", "cpu"]));
            Assert.Contains($"--model '{path}' is not a directory", line);
            Assert.DoesNotContain("unknown model preset", line);
        }
        Assert.Contains("unknown model preset 'llama-9'", OneErrorLine(CliHarness.Run([.. prefix, "--model", "llama-9", "--device", "cpu"])));
    }

    [Fact]
    public void An_empty_model_is_an_error_not_the_demo()
    {
        foreach (string[] args in new[] { new[] { "generate", "--model", "" }, new[] { "chat", "--model", " " }, new[] { "memory", "--model", "" } })
        {
            var r = CliHarness.Run(args);
            string line = OneErrorLine(r);
            Assert.Contains("is empty", line);
            Assert.DoesNotContain("demo:", r.Err);
        }
    }

    [Fact]
    public void Only_generate_suggests_tokens_when_there_is_no_tokenizer()
    {
        string chat = OneErrorLine(CliHarness.Run(["chat", "--model", GoldenFixture.Directory, "--device", "cpu"], ""));
        Assert.Contains("No tokenizer in", chat);
        Assert.DoesNotContain("--tokens", chat);
        string generate = OneErrorLine(CliHarness.Run("generate", "--model", GoldenFixture.Directory, "--prompt", "hi", "--device", "cpu"));
        Assert.Contains("--tokens", generate);
    }

    [Fact]
    public void A_directory_named_model_safetensors_is_called_a_directory()
    {
        string model = Path.Combine(_dir, "m");
        Directory.CreateDirectory(Path.Combine(model, "model.safetensors"));
        File.Copy(Path.Combine(GoldenFixture.Directory, "config.json"), Path.Combine(model, "config.json"));
        string line = OneErrorLine(CliHarness.Run("logits", "--model", model, "--tokens", "1", "--out", Path.Combine(_dir, "x.npy"), "--device", "cpu"));
        Assert.Contains("model.safetensors is a directory, not a file", line);
    }

    [Fact]
    public void A_truncated_demo_model_is_rebuilt_not_to_be_downloaded()
    {
        string dir = DemoModel.Ensure(_dir);
        string weights = Path.Combine(dir, "model.safetensors");
        long length = new FileInfo(weights).Length;
        using (var s = new FileStream(weights, FileMode.Open))
            s.SetLength(length / 2);
        Assert.Equal(dir, DemoModel.Ensure(_dir));
        Assert.Equal(length, new FileInfo(weights).Length);
        using var file = SafetensorsFile.Open(weights);
        Assert.Equal(DemoModel.Config.ExpectedTensors().Count, file.Tensors.Count);
    }

    [Fact]
    public void A_stale_demo_build_of_a_dead_process_is_removed()
    {
        // A pid far above the kernel's default pid_max (4194304) belongs to no process.
        string stale = Path.Combine(_dir, $".{DemoModel.DirectoryName}.tmp-2000000000");
        Directory.CreateDirectory(stale);
        File.WriteAllText(Path.Combine(stale, "config.json"), "{");
        DemoModel.Ensure(_dir);
        Assert.False(Directory.Exists(stale));
    }

    [Fact]
    public void The_demo_in_an_unwritable_directory_says_where_and_what_to_do()
    {
        if (!OperatingSystem.IsLinux())
            return;
        var e = Assert.Throws<EngineStateException>(() => DemoModel.Ensure("/proc/ilgpu-llama-weights"));
        Assert.Contains("cannot build the demo model in /proc/ilgpu-llama-weights", e.Message);
        Assert.Contains("run from a writable directory", e.Message);
    }

    [Theory]
    [InlineData("TERM")]
    [InlineData("INT")]
    public void An_interrupted_first_demo_build_leaves_nothing_behind(string signal)
    {
        if (!OperatingSystem.IsLinux())
            return;
        // A shell that starts this test host in the background ignores SIGINT, and so does every child.
        if (signal == "INT" && SignalIgnored(2))
            return;
        for (int attempt = 0; attempt < 5; attempt++)
        {
            string cwd = Path.Combine(_dir, $"run{attempt}");
            Directory.CreateDirectory(cwd);
            var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
            {
                WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
            };
            foreach (string a in new[] { Path.Combine(AppContext.BaseDirectory, "ilgpu-llama.dll"), "generate", "--device", "cpu", "--max-new-tokens", "1" })
                start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            _ = process.StandardOutput.ReadToEndAsync();
            _ = process.StandardError.ReadToEndAsync();
            string weights = Path.Combine(cwd, "weights");
            var watch = Stopwatch.StartNew();
            bool seen = false;
            while (!process.HasExited && watch.Elapsed < TimeSpan.FromSeconds(60))
            {
                if (Directory.Exists(weights) && Directory.GetDirectories(weights, ".*tmp*").Length > 0)
                {
                    seen = true;
                    using var kill = Process.Start("kill", $"-{signal} {process.Id}");
                    kill.WaitForExit();
                    break;
                }
                Thread.Sleep(1);
            }
            Assert.True(process.WaitForExit(TimeSpan.FromMinutes(2)));
            if (!seen)
                continue; // the build finished between two looks; try again
            Assert.NotEqual(0, process.ExitCode);
            Assert.Empty(Directory.GetFileSystemEntries(weights, ".*"));
            return;
        }
        Assert.Fail("the demo build was never caught in progress in 5 attempts");
    }

    static bool SignalIgnored(int signal)
    {
        string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line[7..].Trim(), 16) & (1UL << (signal - 1))) != 0;
    }

    [Fact]
    public void Memory_allocate_on_the_cpu_says_the_figures_are_reserved_not_resident()
    {
        var r = CliHarness.Run("memory", "--model", GoldenFixture.Directory, "--allocate", "--device", "cpu", "--batch", "1", "--seq", "16");
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("reserved host memory", r.Out.ReplaceLineEndings(" "));
        Assert.Contains("not resident", r.Out.ReplaceLineEndings(" "));
    }
}
