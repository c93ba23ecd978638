namespace IlgpuLlama.Tests.Safetensors;

/// <summary>Locates the checked-in golden model and hands out scratch directories that clean up after themselves.</summary>
internal static class Fixtures
{
    private static readonly Lazy<string> TinyDir = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "fixtures", "tiny-llama3");
            if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
        }
        throw new DirectoryNotFoundException($"tests/fixtures/tiny-llama3 not found above {AppContext.BaseDirectory}");
    });

    /// <summary>Directory of the golden tiny Llama 3 model.</summary>
    public static string TinyLlamaDir => TinyDir.Value;

    public static string TinySafetensors => Path.Combine(TinyLlamaDir, "model.safetensors");
}

/// <summary>A fresh temporary directory deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "ilgpullama-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
