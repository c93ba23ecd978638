using IlgpuLlama.IO;
using IlgpuLlama.Tests.Cli;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>
/// Issue 17, item 9: the signal handler deletes a temporary directory while the writer (the demo
/// build, quantize) is still creating files in it. A file created during the recursive delete made
/// it fail with "directory not empty", the failure was ignored, and the directory was left (a
/// `.demo-` directory after SIGTERM on a loaded machine). The delete now repeats until it is gone.
/// </summary>
public sealed class TemporaryPathsTests
{
    [Fact]
    public void Deleting_a_directory_that_another_thread_is_filling_removes_it()
    {
        string parent = CliHarness.TempDir();
        try
        {
            for (int round = 0; round < 3; round++)
            {
                string dir = Path.Combine(parent, $".demo.tmp-{round}");
                Directory.CreateDirectory(dir);
                int created = 0;
                var writer = new Thread(() =>
                {
                    // Creates files quickly until the directory is gone (as Write(tmp) would fail then), 5,000 at most.
                    for (int i = 0; i < 5000; i++)
                    {
                        try
                        {
                            File.WriteAllText(Path.Combine(dir, $"f{i}"), "x");
                            Volatile.Write(ref created, i + 1);
                        }
                        catch (IOException)
                        {
                            return;
                        }
                    }
                });
                writer.Start();
                var wait = System.Diagnostics.Stopwatch.StartNew();
                while (Volatile.Read(ref created) < 50 && writer.IsAlive && wait.Elapsed < TimeSpan.FromMinutes(1))
                    Thread.Sleep(1);
                TemporaryPaths.Delete(dir);
                bool leftAfterDelete = Directory.Exists(dir);
                Assert.True(writer.Join(TimeSpan.FromMinutes(1)), "the writer never saw the directory go");
                Assert.False(leftAfterDelete, $"round {round}: the directory outlived the delete (a file was created while it was being deleted)");
                Assert.False(Directory.Exists(dir));
            }
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }
}
