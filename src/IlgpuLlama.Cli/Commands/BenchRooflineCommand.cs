using System.CommandLine;
using System.Text.Json;
using IlgpuLlama.Cli.Bench;
using IlgpuLlama.Cli.Infrastructure;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama bench roofline</c>: re-renders the roofline PNG and the markdown table from a saved
/// <c>bench kernels --json</c> file, e.g. one measured on a GPU machine whose image has no fonts.
/// </summary>
public static class BenchRooflineCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var from = new Option<FileInfo>("--from") { Description = "A bench kernels --json file", Required = true, HelpName = "FILE.json" };
        var output = new Option<FileInfo>("--out") { Description = "PNG to write", Required = true, HelpName = "FILE.png" };
        var command = new Command("roofline", "Draw the roofline and print the table of a saved bench kernels --json run") { from, output };
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var file = parse.GetValue(from)!;
            if (!file.Exists)
                throw new FileNotFoundException($"--from '{file.FullName}' does not exist");
            KernelBenchReport report;
            try
            {
                report = JsonSerializer.Deserialize<KernelBenchReport>(File.ReadAllText(file.FullName), CommandIO.JsonOptions)
                    ?? throw new ArgumentException($"{file.FullName} holds no benchmark report");
            }
            catch (JsonException e)
            {
                throw new ArgumentException($"{file.FullName} is not a bench kernels --json report: {e.Message}");
            }
            io.Out.Write(BenchOutput.Markdown(report));
            int n = RooflinePlot.Save(report, parse.GetValue(output)!.FullName);
            io.Err.WriteLine($"wrote roofline with {n} points to {parse.GetValue(output)!.FullName}");
            return 0;
        });
        return command;
    }
}
