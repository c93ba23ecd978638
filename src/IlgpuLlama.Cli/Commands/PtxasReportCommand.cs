using System.CommandLine;
using IlgpuLlama.Cli.Analysis;
using IlgpuLlama.Cli.Infrastructure;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama ptxas-report --dir DIR [--arch sm_60] [--doc docs/kernels.md]</c>: reads the ptxas
/// and cuobjdump output that tools/ptxas-check.sh left in DIR, prints the resource/occupancy table,
/// optionally rewrites it into a markdown document between the ptxas-table markers, and exits 1
/// when any kernel fails a static check (see <see cref="PtxasReport"/>).
/// </summary>
public static class PtxasReportCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var dir = new Option<DirectoryInfo>("--dir")
        {
            Description = "Directory with <kernel>.ptx, <kernel>.ptxas.txt (ptxas -v stderr) and <kernel>.sass (cuobjdump -sass)",
            Required = true,
        };
        var arch = new Option<string>("--arch") { Description = "Architecture the files were built for", DefaultValueFactory = _ => "sm_60" };
        arch.AcceptOnlyFromAmong("sm_60", "sm_70", "sm_80", "sm_90");
        var doc = new Option<FileInfo?>("--doc") { Description = "Markdown file whose ptxas-table section is replaced by the table" };
        var toolVersion = new Option<string?>("--tool-version") { Description = "ptxas version line, quoted in the table's preamble" };
        var json = CliOptions.Json();
        var command = new Command("ptxas-report", "Check ptxas/SASS output of every kernel (no spills, 128-bit matvec loads) and tabulate occupancy")
        {
            dir, arch, doc, toolVersion, json,
        };
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var report = PtxasReport.Build(parse.GetValue(dir)!.FullName, parse.GetValue(arch)!, parse.GetValue(toolVersion));
            string table = PtxasReport.Markdown(report);
            if (parse.GetValue(json))
                io.WriteJson(report);
            else
                io.Out.Write(table);

            if (parse.GetValue(doc) is { } file)
            {
                if (!file.Exists)
                    throw new FileNotFoundException($"--doc {file.FullName} does not exist");
                string text = IlgpuLlama.IO.InputFile.ReadAllText(file.FullName);
                string updated = PtxasReport.ReplaceBetweenMarkers(text, table);
                if (updated != text)
                    File.WriteAllText(file.FullName, updated);
                io.Err.WriteLine($"updated the ptxas table in {file.FullName}");
            }

            var failed = report.Kernels.Where(k => k.Problems.Count > 0).ToList();
            foreach (var k in failed)
                foreach (var p in k.Problems)
                    io.Err.WriteLine($"FAIL {k.Kernel}: {p}");
            if (failed.Count > 0)
                throw new InvalidOperationException($"{failed.Count} of {report.Kernels.Count} kernels failed the static checks (see FAIL lines above)");
            io.Err.WriteLine($"all {report.Kernels.Count} kernels pass: no ptxas errors, no local memory, 128-bit loads in every matvec kernel");
            return 0;
        });
        return command;
    }
}
