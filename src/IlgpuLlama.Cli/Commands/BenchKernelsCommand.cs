using System.CommandLine;
using IlgpuLlama.Cli.Bench;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Bench;
using Spectre.Console;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama bench kernels</c>: validated microbenchmarks of every kernel family at Llama 3.2 1B
/// (or tiny) shapes, with measured copy bandwidth, GB/s, GFLOP/s and an optional roofline PNG.
/// </summary>
public static class BenchKernelsCommand
{
    /// <summary>File written by a bare <c>--plot</c>.</summary>
    public const string DefaultPlotFile = "bench-kernels.png";

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var device = CliOptions.Device();
        var shapes = new Option<string?>("--shapes")
        {
            Description = "Shape set: llama-3.2-1b or tiny (default: llama-3.2-1b on CUDA, tiny on the CPU accelerator)",
            HelpName = "llama-3.2-1b|tiny",
        };
        shapes.AcceptOnlyFromAmong(BenchShapes.Names);
        var dtype = CliOptions.DType("Weight format of the weight-reading kernels (q8_0 and q4_0 run the families that read quantised matrices: matvec, GEMM and the persistent decode layer)");
        var repeats = CliOptions.OptionalInteger("--repeats", "Timed launches per case, the median is reported (default: 20 on CUDA, 5 on the CPU accelerator)", 1);
        var warmup = CliOptions.OptionalInteger("--warmup", "Untimed launches before timing (default: 3 on CUDA, 1 on the CPU accelerator)", 0);
        var filter = new Option<string[]>("--filter")
        {
            Description = "Run only the cases whose name (kernel shape bN, see --list) contains this text, or matches it as a glob with * and ?; repeat or separate with commas",
            HelpName = "TEXT|GLOB",
        };
        var backToBack = new Option<bool>("--back-to-back")
        {
            Description = "Time the --repeats launches of each case back to back (mean per launch, no L2 flush or event between them) instead of one by one, so a short kernel is not hidden behind the launch overhead",
        };
        var list = new Option<bool>("--list") { Description = "Print the case names (with --filter: those it keeps) and exit without running anything" };
        var json = CliOptions.Json();
        var csv = new Option<bool>("--csv") { Description = "Write CSV to stdout instead of the markdown table" };
        var plot = new Option<FileInfo?>("--plot")
        {
            Description = $"Write a roofline PNG (ScottPlot); without a file name: {DefaultPlotFile} in the current directory",
            HelpName = "FILE.png",
            Arity = ArgumentArity.ZeroOrOne,
            CustomParser = r => new FileInfo(r.Tokens.Count > 0 ? r.Tokens[0].Value : DefaultPlotFile),
        };

        var command = new Command("kernels", "Validate and time every kernel family (median of --repeats launches)")
        {
            device, shapes, dtype, filter, list, repeats, warmup, backToBack, json, csv, plot,
        };
        command.Validators.Add(r =>
        {
            if (r.GetValue(json) && r.GetValue(csv))
                r.AddError("--json and --csv cannot be combined");
        });
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var options = new KernelBenchOptions(
                parse.GetValue(device),
                parse.GetValue(shapes),
                WeightFormat.Parse(parse.GetValue(dtype)!),
                parse.GetValue(repeats),
                parse.GetValue(warmup),
                Filters: parse.GetValue(filter),
                BackToBack: parse.GetValue(backToBack));
            if (parse.GetValue(list))
            {
                // Without --shapes the device decides the default set, as a run would.
                string shapeSet = options.Shapes ?? KernelBenchRunner.DefaultShapes(ResolvesToCuda(options.Device));
                foreach (var c in BenchCaseFilter.Select(BenchCatalog.Cases(BenchShapes.Parse(shapeSet), options.Format), options.Filters))
                    io.Out.WriteLine(BenchCaseFilter.Name(c));
                io.Out.Flush();
                return 0;
            }
            if (parse.GetValue(plot) is not null)
                RooflinePlot.RequireRenderer();
            var report = RunWithProgress(io, options);

            if (parse.GetValue(json))
                io.WriteJson(report);
            else if (parse.GetValue(csv))
                io.Out.Write(BenchOutput.ToCsv(report));
            else
                io.Out.Write(BenchOutput.Markdown(report));
            io.Out.Flush();

            if (parse.GetValue(plot) is { } file)
            {
                int n = RooflinePlot.Save(report, file.FullName);
                io.Err.WriteLine($"wrote roofline with {n} points to {file.FullName}");
            }

            int skipped = report.Rows.Count(r => r.Skipped);
            if (skipped > 0)
                io.Err.WriteLine($"{skipped} cases skipped: their launch is rejected on this device");
            if (report.FailedValidations > 0)
                throw new InvalidOperationException($"{report.FailedValidations} of {report.Rows.Count} kernel validations failed (see the check column)");
            return 0;
        });
        return command;
    }

    static bool ResolvesToCuda(IlgpuLlama.Device.DeviceKind kind)
    {
        if (kind != IlgpuLlama.Device.DeviceKind.Auto)
            return kind == IlgpuLlama.Device.DeviceKind.Cuda;
        using var device = IlgpuLlama.Device.ComputeDevice.Create(kind);
        return device.IsCuda;
    }

    static KernelBenchReport RunWithProgress(CommandIO io, KernelBenchOptions options)
    {
        if (!io.ErrIsTerminal)
            return KernelBenchRunner.Run(options, line => io.Err.WriteLine(line));

        KernelBenchReport? report = null;
        var console = CommandIO.Console(io.Err);
        console.Status().Start("starting", status =>
        {
            report = KernelBenchRunner.Run(options, line =>
            {
                console.MarkupLine(Markup.Escape(line));
                status.Status(Markup.Escape(line.Length > 100 ? line[..100] : line));
            });
        });
        return report!;
    }
}
