using IlgpuLlama.Cli;

namespace IlgpuLlama.Tests.Cli;

/// <summary>Runs the CLI entry point in-process with captured stdout and stderr.</summary>
public static class CliHarness
{
    public sealed record Result(int ExitCode, string Out, string Err);

    /// <summary>
    /// Longest an in-process command may run. A command that should have failed at parsing but
    /// started a server (or waits on input) fails its test after this instead of holding the whole
    /// test run until CI's time limit.
    /// </summary>
    public static readonly TimeSpan Limit = TimeSpan.FromMinutes(5);

    /// <summary>Runs with an empty standard input: a test never reads the console's, which a CI runner may hold open.</summary>
    public static Result Run(params string[] args) => Run(args, "");

    /// <summary>Runs with <paramref name="input"/> as standard input.</summary>
    public static Result Run(string[] args, string input)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        var run = Task.Factory.StartNew(() => Program.Run(args, new StringReader(input), o, e), TaskCreationOptions.LongRunning);
        if (!run.Wait(Limit))
            throw new TimeoutException($"ilgpu-llama {string.Join(' ', args)} still running after {Limit.TotalMinutes} minutes (it should have exited)");
        return new Result(run.GetAwaiter().GetResult(), o.ToString(), e.ToString());
    }

    /// <summary>A fresh temporary directory, deleted by the caller.</summary>
    public static string TempDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "ilgpu-llama-test-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(d);
        return d;
    }
}
