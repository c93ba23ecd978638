using System.CommandLine;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama bench</c>: parent of the benchmarks (<c>kernels</c>, <c>e2e</c>, <c>roofline</c>, added
/// in Program.cs). Without a subcommand it prints its help.
/// </summary>
public static class BenchCommand
{
    /// <summary>Builds the parent command; subcommands are added by Program.</summary>
    public static Command Create() => new("bench", "Benchmarks: kernels, end-to-end (e2e), roofline of a saved run, serve (load test of the HTTP server)");
}
