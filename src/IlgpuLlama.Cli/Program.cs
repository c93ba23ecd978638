using System.CommandLine;
using IlgpuLlama.Cli.Commands;
using IlgpuLlama.Cli.Infrastructure;

namespace IlgpuLlama.Cli;

/// <summary>
/// Entry point of <c>ilgpu-llama</c>. This file only wires commands together: each command lives in
/// its own file under Commands/, shared options and the error handling live in Infrastructure/.
/// </summary>
public static class Program
{
    /// <summary>Process entry point.</summary>
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs the CLI in-process with captured output (used by the tests).</summary>
    /// <returns>0 on success, 1 on an error, 2 on a usage error</returns>
    public static int Run(string[] args, TextWriter output, TextWriter error) => CliRunner.Run(BuildRoot(), args, output, error);

    /// <summary>Runs the CLI in-process with <paramref name="input"/> as standard input (chat lines, <c>--file -</c>).</summary>
    public static int Run(string[] args, TextReader input, TextWriter output, TextWriter error) =>
        CliRunner.Run(BuildRoot(() => input), args, output, error);

    /// <summary>Runs the CLI in-process with <paramref name="input"/> as standard input and <paramref name="interrupts"/> as its Ctrl-C (chat).</summary>
    public static int Run(string[] args, TextReader input, TextWriter output, TextWriter error, Interrupts interrupts) =>
        CliRunner.Run(BuildRoot(() => input, () => interrupts), args, output, error);

    /// <summary>
    /// The command tree; <paramref name="input"/> supplies standard input (default: the console's, read
    /// when needed), <paramref name="interrupts"/> Ctrl-C (default: the console's, hooked while chat runs).
    /// </summary>
    public static RootCommand BuildRoot(Func<TextReader>? input = null, Func<Interrupts>? interrupts = null)
    {
        input ??= () => Console.In;
        var root = new RootCommand("Llama 3.x inference on ILGPU kernels (CUDA or the CPU accelerator).");
        root.Options.Add(CliOptions.Verbose);

        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(PtxCommand.Create());
        root.Subcommands.Add(PtxasReportCommand.Create());
        root.Subcommands.Add(MemoryCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create(input));
        root.Subcommands.Add(LogitsCommand.Create());
        root.Subcommands.Add(CompareLogitsCommand.Create());
        root.Subcommands.Add(QuantizeCommand.Create());
        root.Subcommands.Add(ChatCommand.Create(input, interrupts));
        root.Subcommands.Add(TokenizeCommand.Create(input));
        root.Subcommands.Add(DetokenizeCommand.Create());
        root.Subcommands.Add(PerplexityCommand.Create(input));
        root.Subcommands.Add(ServeCommand.Create());

        var bench = BenchCommand.Create();
        bench.Subcommands.Add(BenchKernelsCommand.Create());
        bench.Subcommands.Add(BenchE2eCommand.Create());
        bench.Subcommands.Add(BenchRooflineCommand.Create());
        bench.Subcommands.Add(BenchServeCommand.Create());
        root.Subcommands.Add(bench);
        CliOptions.AddShortAliases(root);
        return root;
    }
}
