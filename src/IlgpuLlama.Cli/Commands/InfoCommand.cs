using System.CommandLine;
using System.Reflection;
using System.Runtime.InteropServices;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using Spectre.Console;

namespace IlgpuLlama.Cli.Commands;

/// <summary><c>ilgpu-llama info</c>: versions and every accelerator ILGPU can see. Works without a GPU.</summary>
public static class InfoCommand
{
    /// <summary>One accelerator as reported by <see cref="ComputeDevice.ListAll"/>.</summary>
    /// <remarks>ComputeCapability is null where there is none (the CPU accelerator); the table shows "-".</remarks>
    public sealed record AcceleratorInfo(string Kind, string Name, long MemoryBytes, int WarpSize, string? ComputeCapability, int Multiprocessors);

    /// <summary>The whole report (the JSON shape of <c>info --json</c>).</summary>
    public sealed record InfoReport(string IlgpuVersion, string DotnetVersion, string Runtime, string Os, IReadOnlyList<AcceleratorInfo> Accelerators);

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var json = CliOptions.Json();
        var command = new Command("info", "Show ILGPU and .NET versions and every accelerator found");
        command.Options.Add(json);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var report = Collect();
            if (parse.GetValue(json))
                io.WriteJson(report);
            else
                Print(io, report);
            return 0;
        });
        return command;
    }

    /// <summary>Gathers the report.</summary>
    public static InfoReport Collect()
    {
        // The CPU accelerator reports no memory limit (long.MaxValue): show the host's memory instead.
        long hostMemory = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        var accelerators = ComputeDevice.ListAll()
            .Select(a => new AcceleratorInfo(a.Kind, a.Name, a.Kind == "cpu" ? hostMemory : a.MemoryBytes, a.WarpSize, a.ComputeCapability, a.MultiprocessorCount))
            .ToList();
        return new InfoReport(IlgpuVersion, Environment.Version.ToString(), RuntimeInformation.FrameworkDescription,
            RuntimeInformation.OSDescription, accelerators);
    }

    /// <summary>ILGPU's informational version (without the source-revision suffix).</summary>
    public static string IlgpuVersion
    {
        get
        {
            var asm = typeof(ILGPU.Context).Assembly;
            string? v = asm.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
            v ??= asm.GetName().Version?.ToString() ?? "unknown";
            int plus = v.IndexOf('+');
            return plus > 0 ? v[..plus] : v;
        }
    }

    static void Print(CommandIO io, InfoReport r)
    {
        var console = CommandIO.Console(io.Out);
        console.WriteLine($"ILGPU   {r.IlgpuVersion}");
        console.WriteLine($".NET    {r.DotnetVersion} ({r.Runtime})");
        console.WriteLine($"OS      {r.Os}");
        var table = new Table().AddColumns("kind", "name", "memory", "warp", "compute capability", "multiprocessors");
        foreach (var a in r.Accelerators)
        {
            table.AddRow(a.Kind, Markup.Escape(a.Name), $"{a.MemoryBytes / (double)(1L << 30):F1} GiB{(a.Kind == "cpu" ? " (host)" : "")}", a.WarpSize.ToString(),
                a.ComputeCapability ?? "-", a.Multiprocessors.ToString());
        }
        console.Write(table);
        if (r.Accelerators.All(a => a.Kind != "cuda"))
            console.WriteLine("No CUDA GPU found: commands run on the CPU accelerator (--device cpu).");
    }
}
