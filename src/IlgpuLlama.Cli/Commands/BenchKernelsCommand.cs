using System.CommandLine;
namespace IlgpuLlama.Cli.Commands;
public static class BenchKernelsCommand
{
    public static Command Create() => new("kernels", "stub");
}
