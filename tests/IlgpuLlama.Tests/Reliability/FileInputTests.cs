using System.Diagnostics;
using System.Text;
using IlgpuLlama.IO;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>
/// Files given to the CLI: compare-logits' verdict, the .npy reader, the output-file policy (nothing
/// but a regular file is replaced, links are written through, no temporary file is left), and the
/// one-line messages of every I/O and format failure.
/// </summary>
public sealed class FileInputTests : IDisposable
{
    readonly string _dir = CliHarness.TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static string Reference => Path.Combine(GoldenFixture.Directory, "logits_case0.npy");

    string WriteNpy(string name, float[] data, long[] shape)
    {
        string path = Path.Combine(_dir, name);
        NpyFile.Write(path, data, shape);
        return path;
    }

    /// <summary>A .npy file with header <paramref name="dict"/> and <paramref name="dataBytes"/> bytes of data.</summary>
    string RawNpy(string name, string dict, int dataBytes, byte major = 1)
    {
        var header = Encoding.ASCII.GetBytes(dict + "\n");
        var bytes = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', major, 0 };
        if (major == 1)
            bytes.AddRange(BitConverter.GetBytes((ushort)header.Length));
        else
            bytes.AddRange(BitConverter.GetBytes((uint)header.Length));
        bytes.AddRange(header);
        bytes.AddRange(new byte[dataBytes]);
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes.ToArray());
        return path;
    }

    static string OneErrorLine(CliHarness.Result r, int exitCode = 1)
    {
        Assert.True(r.ExitCode == exitCode, $"exit {r.ExitCode}\n{r.Err}");
        var errors = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("error:", StringComparison.Ordinal) || l.Contains("   at ")).ToList();
        string line = Assert.Single(errors);
        Assert.DoesNotContain("internal error", r.Err);
        Assert.True(line.Length <= 700, $"error line of {line.Length} characters");
        return line;
    }

    // ---- compare-logits verdict

    [Fact]
    public void Compare_passes_the_reference_against_itself_and_small_noise()
    {
        var r = CliHarness.Run("compare-logits", "--ours", Reference, "--reference", Reference);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("passed", r.Out);
        var c = GoldenFixture.Cases[0];
        var noise = new Random(3);
        string noisy = WriteNpy("noisy.npy", c.Logits.Select(x => x + (float)(noise.NextDouble() - 0.5) * 0.01f).ToArray(), c.Shape);
        r = CliHarness.Run("compare-logits", "--ours", noisy, "--reference", Reference);
        Assert.True(r.ExitCode == 0, r.Err);
    }

    public static TheoryData<string, string> WrongLogits() => new()
    {
        { "zero", "max error" },
        { "negated", "max error" },
        { "shuffled", "max error" },
        { "constant", "max error" },
        { "scaled", "max error" },
        { "one-row-wrong", "max error" },
        { "nan-ours", "--ours has" },
        { "inf-reference", "--reference has" },
        { "constant-reference", "no spread" },
    };

    [Theory]
    [MemberData(nameof(WrongLogits))]
    public void Compare_fails_wrong_logits_and_says_why(string kind, string reason)
    {
        var c = GoldenFixture.Cases[0];
        float[] reference = (float[])c.Logits.Clone();
        float[] ours = (float[])c.Logits.Clone();
        int v = (int)c.Shape[1];
        switch (kind)
        {
            case "zero": Array.Clear(ours); break;
            case "negated": for (int i = 0; i < ours.Length; i++) ours[i] = -ours[i]; break;
            case "shuffled": new Random(1).Shuffle(ours); break;
            case "constant": Array.Fill(ours, 3f); break;
            case "scaled": for (int i = 0; i < ours.Length; i++) ours[i] *= 1.5f; break;
            case "one-row-wrong": Array.Clear(ours, v * 2, v); break;
            case "nan-ours": ours[5] = float.NaN; break;
            case "inf-reference": reference[7] = float.PositiveInfinity; break;
            case "constant-reference": Array.Fill(reference, 1f); break;
        }
        string a = WriteNpy("ours.npy", ours, c.Shape), b = WriteNpy("ref.npy", reference, c.Shape);
        var r = CliHarness.Run("compare-logits", "--ours", a, "--reference", b);
        string line = OneErrorLine(r);
        Assert.Contains("do not match the reference", line);
        Assert.Contains(reason, line);
    }

    // ---- the .npy reader

    public static TheoryData<string, string> BadNpy() => new()
    {
        { "text", "is not a .npy file" },
        { "empty", "is empty" },
        { "truncated-data", "is truncated" },
        { "truncated-header", "is truncated" },
        { "float64", "float64" },
        { "float16", "float16" },
        { "big-endian", "big-endian float32" },
        { "fortran", "Fortran" },
        { "directory", "is a directory" },
        { "missing", "does not exist" },
        { "extra-bytes", "bytes after the data" },
        { "version-9", "format version 9" },
        { "no-shape", "no shape" },
        { "negative-shape", "is not a tuple of sizes" },
        { "object", "Python objects" },
    };

    [Theory]
    [MemberData(nameof(BadNpy))]
    public void Npy_files_that_are_not_float32_C_order_get_one_line_naming_the_file(string kind, string expected)
    {
        string path = kind switch
        {
            "text" => Write("x.npy", "hello, this is text\n"),
            "empty" => Write("x.npy", ""),
            "truncated-data" => RawNpy("x.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20),
            "truncated-header" => Truncated(RawNpy("x.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24), 30),
            "float64" => RawNpy("x.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 48),
            "float16" => RawNpy("x.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }", 12),
            "big-endian" => RawNpy("x.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24),
            "fortran" => RawNpy("x.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24),
            "directory" => Directory.CreateDirectory(Path.Combine(_dir, "dir.npy")).FullName,
            "missing" => Path.Combine(_dir, "missing.npy"),
            "extra-bytes" => RawNpy("x.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28),
            "version-9" => RawNpy("x.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, major: 9),
            "no-shape" => RawNpy("x.npy", "{'descr': '<f4', 'fortran_order': False, }", 24),
            "negative-shape" => RawNpy("x.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", 24),
            "object" => RawNpy("x.npy", "{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }", 48),
            _ => throw new ArgumentException(kind),
        };
        var r = CliHarness.Run("compare-logits", "--ours", path, "--reference", Reference);
        string line = OneErrorLine(r);
        Assert.Contains(path, line);
        Assert.Contains(expected, line);
    }

    [Fact]
    public void Npy_format_2_is_read()
    {
        string path = RawNpy("v2.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, major: 2);
        var (data, shape) = NpyFile.Read(path);
        Assert.Equal(new long[] { 2, 3 }, shape);
        Assert.Equal(6, data.Length);
    }

    string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    static string Truncated(string path, int length)
    {
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..length]);
        return path;
    }

    // ---- the output-file policy

    CliHarness.Result Logits(string output) =>
        CliHarness.Run("logits", "--model", GoldenFixture.Directory, "--tokens", "1,17,300", "--out", output, "--device", "cpu");

    void AssertNoTemporaryFiles(string dir) =>
        Assert.DoesNotContain(Directory.GetFileSystemEntries(dir), f => Path.GetFileName(f).Contains(".tmp", StringComparison.Ordinal));

    [Fact]
    public void Logits_out_refuses_a_device_node_and_leaves_it_alone()
    {
        if (!OperatingSystem.IsLinux())
            return;
        var before = File.GetLastWriteTimeUtc("/dev/null");
        string line = OneErrorLine(Logits("/dev/null"));
        Assert.Contains("/dev/null exists and is not a regular file", line);
        Assert.Equal(before, File.GetLastWriteTimeUtc("/dev/null"));
        Assert.Empty(Directory.GetFiles("/dev", ".null.tmp*"));
    }

    [Fact]
    public void Logits_out_refuses_a_fifo_without_blocking_on_it()
    {
        if (!OperatingSystem.IsLinux())
            return;
        string fifo = Path.Combine(_dir, "fifo.npy");
        using (var p = Process.Start("mkfifo", fifo))
            p.WaitForExit();
        string line = OneErrorLine(Logits(fifo));
        Assert.Contains("is not a regular file", line);
        AssertNoTemporaryFiles(_dir);
    }

    [Fact]
    public void Logits_out_refuses_a_directory_and_a_missing_directory()
    {
        string line = OneErrorLine(Logits(_dir));
        Assert.Contains($"{_dir} is a directory", line);
        string missing = Path.Combine(_dir, "no", "such", "x.npy");
        line = OneErrorLine(Logits(missing));
        Assert.Contains("does not exist", line);
    }

    [Fact]
    public void Logits_out_in_an_unwritable_place_names_the_target_not_a_temporary_file()
    {
        if (!OperatingSystem.IsLinux())
            return;
        string line = OneErrorLine(Logits("/proc/ilgpu-llama-test.npy"));
        Assert.Contains("/proc/ilgpu-llama-test.npy: cannot write a file in /proc", line);
        Assert.DoesNotContain(".tmp", line);
    }

    [Fact]
    public void Logits_out_writes_through_a_symlink_and_keeps_the_link()
    {
        string target = Path.Combine(_dir, "target.npy");
        File.WriteAllText(target, "old");
        string link = Path.Combine(_dir, "link.npy");
        File.CreateSymbolicLink(link, target);
        var r = Logits(link);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.NotNull(new FileInfo(link).LinkTarget);
        var (_, shape) = NpyFile.Read(target);
        Assert.Equal(new long[] { 3, 512 }, shape);
        AssertNoTemporaryFiles(_dir);
    }

    [Fact]
    public void A_failed_write_removes_its_temporary_file()
    {
        string target = Path.Combine(_dir, "fails.npy");
        Assert.Throws<InvalidOperationException>(() => OutputFile.Write(target, s =>
        {
            s.Write(new byte[100]);
            throw new InvalidOperationException("disk full");
        }));
        Assert.False(File.Exists(target));
        AssertNoTemporaryFiles(_dir);
        Assert.DoesNotContain(TemporaryPaths.Registered, p => p.StartsWith(_dir, StringComparison.Ordinal));
    }

    [Fact]
    public void Ptx_out_naming_an_existing_file_is_one_line()
    {
        string file = Write("file.txt", "keep me");
        string line = OneErrorLine(CliHarness.Run("ptx", "--out", file));
        Assert.Contains($"--out '{file}' is a file", line);
        Assert.Equal("keep me", File.ReadAllText(file));
    }

    [Theory]
    [InlineData("{}", "'device' is missing")]
    [InlineData("{\"device\": \"x\", \"shapes\": \"tiny\", \"storage\": \"fp16\"}", "'copy_bandwidth' is missing")]
    [InlineData("[1, 2]", "is not a bench kernels --json report")]
    [InlineData("not json at all", "is not a bench kernels --json report")]
    [InlineData("", "is not a bench kernels --json report")]
    public void Roofline_from_a_file_that_is_not_a_report_is_one_line(string json, string expected)
    {
        string from = Write("report.json", json);
        string png = Path.Combine(_dir, "r.png");
        string line = OneErrorLine(CliHarness.Run("bench", "roofline", "--from", from, "--out", png));
        Assert.Contains(from, line);
        Assert.Contains(expected, line);
        Assert.False(File.Exists(png));
    }

    // ---- safetensors headers

    string Safetensors(byte[] header)
    {
        string model = Path.Combine(_dir, "model");
        Directory.CreateDirectory(model);
        File.Copy(Path.Combine(GoldenFixture.Directory, "config.json"), Path.Combine(model, "config.json"));
        var bytes = new List<byte>(BitConverter.GetBytes((ulong)header.Length));
        bytes.AddRange(header);
        File.WriteAllBytes(Path.Combine(model, "model.safetensors"), bytes.ToArray());
        return model;
    }

    [Fact]
    public void A_safetensors_header_with_invalid_utf8_names_the_file()
    {
        var header = Encoding.UTF8.GetBytes("{\"model.embed_tokens.weight\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}").ToList();
        header.InsertRange(3, new byte[] { 0xC3, 0x28 });
        string model = Safetensors(header.ToArray());
        string line = OneErrorLine(CliHarness.Run("logits", "--model", model, "--tokens", "1", "--out", Path.Combine(_dir, "x.npy"), "--device", "cpu"));
        Assert.Contains(Path.Combine(model, "model.safetensors"), line);
        Assert.Contains("not valid UTF-8", line);
    }

    [Fact]
    public void A_two_megabyte_json_literal_gives_a_short_line()
    {
        string literal = "{\"" + new string('a', 2 << 20) + "\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
        string model = Safetensors(Encoding.UTF8.GetBytes(literal));
        var r = CliHarness.Run("logits", "--model", model, "--tokens", "1", "--out", Path.Combine(_dir, "x.npy"), "--device", "cpu");
        string line = OneErrorLine(r);
        Assert.Contains("characters cut", line);
    }
}
