using IlgpuLlama.Cli;

namespace IlgpuLlama.Tests.Cli;

/// <summary>Runs the CLI entry point in-process with captured stdout and stderr.</summary>
public static class CliHarness
{
    public sealed record Result(int ExitCode, string Out, string Err);

    public static Result Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return new Result(code, o.ToString(), e.ToString());
    }

    /// <summary>Runs with <paramref name="input"/> as standard input.</summary>
    public static Result Run(string[] args, string input)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, new StringReader(input), o, e);
        return new Result(code, o.ToString(), e.ToString());
    }

    /// <summary>A fresh temporary directory, deleted by the caller.</summary>
    public static string TempDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "ilgpu-llama-test-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(d);
        return d;
    }
}
