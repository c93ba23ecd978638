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
            if (Directory.Exists(file.FullName))
                throw new ArgumentException($"--from '{file.FullName}' is a directory; pass the file written by bench kernels --json > FILE.json");
            if (!file.Exists)
                throw new FileNotFoundException($"--from '{file.FullName}' does not exist");
            string target = IlgpuLlama.IO.OutputFile.Prepare(parse.GetValue(output)!.FullName);
            var report = Read(file.FullName);
            io.Out.Write(BenchOutput.Markdown(report));
            int n = RooflinePlot.Save(report, target);
            io.Err.WriteLine($"wrote roofline with {n} points to {target}");
            return 0;
        });
        return command;
    }

    const string HowToWrite = "write one with: ilgpu-llama bench kernels --json > FILE.json";

    /// <summary>Reads a saved report; a file that is not one (bad JSON, another JSON document, missing fields) is one line naming the file and the first problem.</summary>
    public static KernelBenchReport Read(string path)
    {
        KernelBenchReport? report;
        try
        {
            report = JsonSerializer.Deserialize<KernelBenchReport>(IlgpuLlama.IO.InputFile.ReadAllText(path), CommandIO.JsonOptions);
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"{path} is not a bench kernels --json report ({e.Message}); {HowToWrite}");
        }
        string? missing = report is null ? "the report" : MissingField(report);
        if (missing is not null)
            throw new ArgumentException($"{path} is not a bench kernels --json report: '{missing}' is missing; {HowToWrite}");
        return report!;
    }

    static string? MissingField(KernelBenchReport r)
    {
        if (r.Device is null) return "device";
        if (r.Shapes is null) return "shapes";
        if (r.Storage is null) return "storage";
        if (r.CopyBandwidth is null) return "copy_bandwidth";
        if (r.Rows is null) return "rows";
        for (int i = 0; i < r.Rows.Count; i++)
        {
            var row = r.Rows[i];
            if (row is null) return $"rows[{i}]";
            if (row.Kernel is null) return $"rows[{i}].kernel";
            if (row.Family is null) return $"rows[{i}].family";
            if (row.Shape is null) return $"rows[{i}].shape";
            if (row.Validation is null) return $"rows[{i}].validation";
        }
        return null;
    }
}
