using System.CommandLine;
using IlgpuLlama.Cli.Analysis;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Kernels;
using ILGPU.Runtime.Cuda;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama ptx --arch sm_60 --out DIR</c>: compiles every kernel of <see cref="KernelCatalog.All"/>
/// to PTX with ILGPU's backend (no GPU needed) and writes DIR/&lt;kernel&gt;.ptx.
/// </summary>
public static class PtxCommand
{
    /// <summary>Architectures accepted by --arch.</summary>
    public static readonly string[] Architectures = ["sm_60", "sm_61", "sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90"];

    /// <summary>One written file.</summary>
    public sealed record PtxFile(string Kernel, string Family, string Path, long Bytes, int GlobalV4Loads);

    /// <summary>The JSON shape of <c>ptx --json</c>.</summary>
    public sealed record PtxReport(string Arch, string Isa, IReadOnlyList<PtxFile> Kernels);

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var arch = new Option<string>("--arch")
        {
            Description = "Target architecture",
            DefaultValueFactory = _ => "sm_60",
        };
        arch.AcceptOnlyFromAmong(Architectures);
        var output = new Option<DirectoryInfo>("--out", "-o")
        {
            Description = "Directory for the .ptx files (created if missing)",
            Required = true,
        };
        var isa = new Option<string>("--isa")
        {
            Description = "PTX ISA version; 7.8 is the newest that CUDA 11.8's ptxas (the P100 check) reads",
            DefaultValueFactory = _ => "7.8",
        };
        var json = CliOptions.Json();
        var command = new Command("ptx", "Write the PTX of every kernel (no GPU needed)") { arch, output, isa, json };
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var report = Write(parse.GetValue(arch)!, ParseIsa(parse.GetValue(isa)!), parse.GetValue(output)!.FullName);
            if (parse.GetValue(json))
            {
                io.WriteJson(report);
            }
            else
            {
                int width = report.Kernels.Max(k => k.Kernel.Length);
                foreach (var k in report.Kernels)
                    io.Out.WriteLine($"{k.Kernel.PadRight(width)}  {k.Bytes,8} bytes  {k.GlobalV4Loads,3} ld.global.v4");
                io.Err.WriteLine($"wrote {report.Kernels.Count} PTX files for {report.Arch} (ISA {report.Isa}) to {parse.GetValue(output)!.FullName}");
            }
            return 0;
        });
        return command;
    }

    /// <summary>Parses "7.8" into an instruction set.</summary>
    public static CudaInstructionSet ParseIsa(string text)
    {
        var parts = text.Split('.');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int major) || !int.TryParse(parts[1], out int minor))
            throw new ArgumentException($"--isa '{text}' is not of the form MAJOR.MINOR (e.g. 7.8)");
        return new CudaInstructionSet(major, minor);
    }

    /// <summary>Compiles and writes every kernel.</summary>
    public static PtxReport Write(string arch, CudaInstructionSet isa, string directory)
    {
        if (File.Exists(directory))
            throw new IOException($"--out '{directory}' is a file; give a directory for the .ptx files (it is created if missing)");
        try
        {
            Directory.CreateDirectory(directory);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw new IOException($"--out '{directory}': cannot create the directory ({e.Message.TrimEnd('.')}); choose a writable path", e);
        }
        var files = new List<PtxFile>();
        foreach (var (entry, ptx) in KernelCatalog.CompilePtx(KernelCatalog.ParseArchitecture(arch), isa))
        {
            string path = Path.Combine(directory, entry.Name + ".ptx");
            IlgpuLlama.IO.OutputFile.WriteAllText(path, ptx);
            files.Add(new PtxFile(entry.Name, entry.Family, path, new FileInfo(path).Length, PtxText.CountGlobalV4Loads(ptx)));
        }
        return new PtxReport(arch, $"{isa.Major}.{isa.Minor}", files);
    }
}
