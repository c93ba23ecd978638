using System.CommandLine;
using System.Diagnostics;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Quantization;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>
/// Issue 17, item 4 and the CLI parts of item 8: quantize ended by a signal or a full disk leaves
/// nothing beside its output, a later run removes temporaries of dead processes, and an error after
/// a progress bar starts on its own line. The signal tests run the CLI as its own process, slowed
/// down by ILGPU_LLAMA_QUANTIZE_TEST=slow so the signal surely arrives mid-write.
/// </summary>
public sealed class QuantizeSignalTests(QuantizableModel model) : IClassFixture<QuantizableModel>, IDisposable
{
    readonly string _dir = CliHarness.TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Starts <c>ilgpu-llama ARGS</c> as its own process with <paramref name="seam"/> in ILGPU_LLAMA_QUANTIZE_TEST.</summary>
    internal static Process StartCli(string seam, string workingDirectory, params string[] args)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
        };
        start.Environment["ILGPU_LLAMA_QUANTIZE_TEST"] = seam;
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "ilgpu-llama.dll"));
        foreach (string a in args)
            start.ArgumentList.Add(a);
        return Process.Start(start)!;
    }

    [Theory]
    [InlineData("TERM", 143)]
    [InlineData("HUP", 129)]
    [InlineData("QUIT", 131)]
    public async Task A_quantize_ended_by_a_signal_leaves_nothing_behind(string signal, int exitCode)
    {
        if (!OperatingSystem.IsLinux())
            return;
        // A shell that starts this test host in the background ignores SIGQUIT (and SIGINT), nohup ignores
        // SIGHUP, and so does every child: the signal never reaches quantize (the runtime keeps an
        // inherited SIG_IGN, as a user who ran it under nohup asked). Then there is nothing to test.
        int number = signal switch { "HUP" => 1, "QUIT" => 3, _ => 15 };
        if (SignalIgnored(number))
            return;
        string parent = Path.Combine(_dir, signal);
        Directory.CreateDirectory(parent);
        using var process = StartCli("slow", parent, "quantize", "--model", model.Directory, "--dtype", "q8_0", "--out", Path.Combine(parent, "q"));
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        // Wait (without a deadline that load could break) until the shard is being written in the temporary directory.
        var watch = Stopwatch.StartNew();
        while (!process.HasExited && watch.Elapsed < TimeSpan.FromMinutes(2) &&
               !Directory.GetDirectories(parent, ".q.tmp-*").Any(d => File.Exists(Path.Combine(d, "model.safetensors"))))
            Thread.Sleep(5);
        // (The message must not await the output: that would wait for the process to end.)
        Assert.False(process.HasExited, "quantize finished before the signal (the slow seam is not working)");
        using (var kill = Process.Start("kill", $"-{signal} {process.Id}"))
            kill.WaitForExit();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(2)), "quantize did not end after the signal");
        process.WaitForExit();
        string err = await stderr;
        Assert.True(process.ExitCode == exitCode, $"exit {process.ExitCode}\n{err}");
        Assert.Empty(Directory.GetFileSystemEntries(parent));
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.Contains($"quantize interrupted by SIG{signal}; nothing was written to", line);
        Assert.Equal("", await stdout);
    }

    static bool SignalIgnored(int signal)
    {
        string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line[7..].Trim(), 16) & (1UL << (signal - 1))) != 0;
    }

    [Fact]
    public void A_stale_quantize_temporary_of_a_dead_process_is_removed_by_the_next_run()
    {
        // A pid far above the kernel's default pid_max (4194304) belongs to no process; pid 1 always runs.
        string stale = Path.Combine(_dir, ".q.tmp-2000000000-0123abcd");
        string live = Path.Combine(_dir, ".q.tmp-1-0123abcd");
        string other = Path.Combine(_dir, ".keep-me");
        foreach (string d in new[] { stale, live, other })
        {
            Directory.CreateDirectory(d);
            File.WriteAllText(Path.Combine(d, "model.safetensors"), "half");
        }
        var r = CliHarness.Run("quantize", "--model", model.Directory, "--dtype", "q8_0", "--out", Path.Combine(_dir, "q2"));
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.False(Directory.Exists(stale), "the temporary of a dead process was left");
        Assert.True(Directory.Exists(live), "the temporary of a running process was removed");
        Assert.True(Directory.Exists(other));
        Assert.True(Directory.Exists(Path.Combine(_dir, "q2")));
    }

    [Fact]
    public async Task A_full_disk_names_the_output_and_the_fix_and_leaves_nothing_behind()
    {
        string parent = Path.Combine(_dir, "full");
        Directory.CreateDirectory(parent);
        string outDir = Path.Combine(parent, "q");
        using var process = StartCli("enospc", parent, "quantize", "--model", model.Directory, "--dtype", "q8_0", "--out", outDir);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(2)));
        process.WaitForExit();
        string err = (await stderr).TrimEnd('\n');
        Assert.True(process.ExitCode == 1, $"exit {process.ExitCode}\n{err}");
        Assert.Equal($"error: no space left on the device holding {outDir}; free space or choose another --out (nothing was written)", err);
        Assert.DoesNotContain(".tmp-", err);
        Assert.Empty(Directory.GetFileSystemEntries(parent));
        Assert.Equal("", await stdout);
    }

    [Fact]
    public void A_real_full_disk_gives_the_same_line_where_a_tmpfs_can_be_mounted()
    {
        // Without the seam: a 200 KB tmpfs (root on Linux only; elsewhere the seam test above stands alone).
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
            return;
        string mount = Path.Combine(_dir, "tmpfs");
        Directory.CreateDirectory(mount);
        using (var m = Process.Start("mount", ["-t", "tmpfs", "-o", "size=200k", "tmpfs", mount])!)
        {
            m.WaitForExit();
            if (m.ExitCode != 0)
                return; // a container without CAP_SYS_ADMIN
        }
        try
        {
            string outDir = Path.Combine(mount, "q");
            var r = CliHarness.Run("quantize", "--model", model.Directory, "--dtype", "q8_0", "--out", outDir);
            Assert.True(r.ExitCode == 1, r.Err);
            Assert.Equal($"error: no space left on the device holding {outDir}; free space or choose another --out (nothing was written)", r.Err.Trim());
            Assert.Empty(Directory.GetFileSystemEntries(mount));
        }
        finally
        {
            using var u = Process.Start("umount", [mount])!;
            u.WaitForExit();
        }
    }

    [Fact]
    public void An_error_after_a_progress_bar_starts_on_its_own_line()
    {
        var command = new Command("fail");
        command.SetAction(int (parse) =>
        {
            var io = CommandIO.From(parse);
            io.Err.Write("\r  quantizing 0.1 GB / 0.2 GB [#####.....] 500 MB/s");
            throw new IOException("disk went away");
        });
        var root = new RootCommand { command };
        var err = new StringWriter();
        int exit = CliRunner.Run(root, ["fail"], new StringWriter(), err);
        Assert.Equal(1, exit);
        string[] lines = err.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.StartsWith("\r  quantizing", lines[0]);
        Assert.Equal("error: disk went away", lines[1]);
    }
}
