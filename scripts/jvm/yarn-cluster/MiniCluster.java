import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.util.Map;
import java.util.Objects;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;

/**
 * A mini HDFS + YARN cluster on loopback, for the YARN tests (tests/yarn_cluster.py).
 *
 * <pre>java -cp 'jars/yarn-cluster/*:jars/yarn-cluster' MiniCluster CONF_DIR [NODE_MANAGERS [NM_MEMORY_MB [NM_VCORES]]]</pre>
 *
 * Starts a MiniDFSCluster (one name node, one data node) and a MiniYARNCluster (one resource manager,
 * NODE_MANAGERS node managers, default 1) with their data, container work and log folders under the current
 * directory, writes core-site.xml (the default file system), hdfs-site.xml and yarn-site.xml (every yarn.* setting
 * that differs from Hadoop's defaults, the servers' real addresses included) into CONF_DIR, prints one line
 * {@code MiniCluster ready fs=hdfs://... rm=host:port web=http://host:port} and runs until killed.
 */
public final class MiniCluster {
  private MiniCluster() {
  }

  /** The YARN settings of a cluster that fits a small machine: memory, vcores, checks off, AMs allowed. */
  static YarnConfiguration yarnConf(Configuration base, int memoryMb, int vcores) {
    YarnConfiguration conf = new YarnConfiguration(base);
    conf.set(YarnConfiguration.RM_HOSTNAME, "127.0.0.1");
    conf.setInt(YarnConfiguration.NM_PMEM_MB, memoryMb);
    conf.setInt(YarnConfiguration.YARN_MINICLUSTER_NM_PMEM_MB, memoryMb);  // what MiniYARNCluster's nodes offer
    conf.setInt(YarnConfiguration.NM_VCORES, vcores);
    conf.setInt(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, 256);
    conf.setInt(YarnConfiguration.RM_SCHEDULER_MAXIMUM_ALLOCATION_MB, memoryMb);
    conf.setInt(YarnConfiguration.RM_SCHEDULER_MAXIMUM_ALLOCATION_VCORES, vcores);
    conf.setBoolean(YarnConfiguration.NM_PMEM_CHECK_ENABLED, false);
    conf.setBoolean(YarnConfiguration.NM_VMEM_CHECK_ENABLED, false);
    // a nearly full disk would mark the node unhealthy and no container would start
    conf.setFloat(YarnConfiguration.NM_MAX_PER_DISK_UTILIZATION_PERCENTAGE, 100.0f);
    // the capacity scheduler's one queue (no capacity-scheduler.xml on this classpath); application masters
    // may take all of it, so that a driver (cluster deploy mode) always gets its container
    conf.set("yarn.scheduler.capacity.root.queues", "default");
    conf.setFloat("yarn.scheduler.capacity.root.default.capacity", 100.0f);
    conf.setFloat("yarn.scheduler.capacity.root.default.maximum-capacity", 100.0f);
    conf.setFloat("yarn.scheduler.capacity.maximum-am-resource-percent", 1.0f);
    // containers' logs stay in the node managers' log folders (no aggregation); kept after the application
    conf.setBoolean(YarnConfiguration.LOG_AGGREGATION_ENABLED, false);
    conf.setLong(YarnConfiguration.DEBUG_NM_DELETE_DELAY_SEC, 3600);
    return conf;
  }

  /** Writes the entries of {@code conf} under {@code prefix} whose value differs from {@code defaults}. */
  static void writeSite(Configuration conf, Configuration defaults, String prefix, File target) throws IOException {
    Configuration site = new Configuration(false);
    for (Map.Entry<String, String> entry : conf) {
      String key = entry.getKey();
      String value = conf.get(key);
      if (key.startsWith(prefix) && !Objects.equals(defaults.get(key), value)) {
        site.set(key, value);
      }
    }
    File tmp = new File(target.getPath() + ".tmp");
    try (OutputStream out = new FileOutputStream(tmp)) {
      site.writeXml(out);
    }
    if (!tmp.renameTo(target)) {
      throw new IOException("cannot write " + target);
    }
  }

  static void waitForResourceManager(MiniYARNCluster yarn) throws InterruptedException {
    // the resource manager's address carries port 0 until its servers are bound
    long deadline = System.currentTimeMillis() + 120_000;
    while (yarn.getConfig().get(YarnConfiguration.RM_ADDRESS, ":0").endsWith(":0")) {
      if (System.currentTimeMillis() > deadline) {
        throw new IllegalStateException("the resource manager did not bind its address in 120s");
      }
      Thread.sleep(100);
    }
  }

  public static void main(String[] args) throws Exception {
    try {
      run(args);
    } catch (Throwable e) {
      // the servers' threads would keep a failed start alive: exit, so the caller sees it at once
      e.printStackTrace();
      System.exit(1);
    }
  }

  static void run(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: MiniCluster CONF_DIR [NODE_MANAGERS [NM_MEMORY_MB [NM_VCORES]]]");
      System.exit(2);
    }
    File confDir = new File(args[0]).getAbsoluteFile();
    int nodeManagers = args.length > 1 ? Integer.parseInt(args[1]) : 1;
    int memoryMb = args.length > 2 ? Integer.parseInt(args[2]) : 8192;
    int vcores = args.length > 3 ? Integer.parseInt(args[3]) : 8;
    if (!confDir.isDirectory() && !confDir.mkdirs()) {
      throw new IOException("cannot create " + confDir);
    }
    File work = new File("").getAbsoluteFile();

    Configuration conf = new Configuration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(work, "hdfs").getPath());
    conf.setInt("dfs.replication", 1);
    conf.setBoolean("dfs.permissions.enabled", false);
    MiniDFSCluster dfs = new MiniDFSCluster.Builder(conf).numDataNodes(1).format(true).build();
    dfs.waitActive();
    FileSystem fs = dfs.getFileSystem();
    // the applications' staging folders (spark.yarn.stagingDir defaults to the user's home) and /tmp
    fs.mkdirs(new Path("/user"), new FsPermission((short) 0777));
    fs.mkdirs(new Path("/tmp"), new FsPermission((short) 01777));

    YarnConfiguration yarnConf = yarnConf(dfs.getConfiguration(0), memoryMb, vcores);
    MiniYARNCluster yarn = new MiniYARNCluster("yarn", nodeManagers, 1, 1);
    yarn.init(yarnConf);
    yarn.start();
    waitForResourceManager(yarn);
    Configuration running = yarn.getConfig();

    Configuration coreSite = new Configuration(false);
    coreSite.set("fs.defaultFS", running.get("fs.defaultFS"));
    writeSite(coreSite, new Configuration(false), "", new File(confDir, "core-site.xml"));
    Configuration hdfsSite = new Configuration(false);
    hdfsSite.setInt("dfs.replication", 1);
    writeSite(hdfsSite, new Configuration(false), "", new File(confDir, "hdfs-site.xml"));
    // the YARN settings only: the mini cluster's others name test classes (a static rack mapping) clients lack
    writeSite(running, new YarnConfiguration(), "yarn.", new File(confDir, "yarn-site.xml"));

    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      yarn.stop();
      dfs.shutdown();
    }));
    System.out.println("MiniCluster ready fs=" + running.get("fs.defaultFS")
        + " rm=" + running.get(YarnConfiguration.RM_ADDRESS)
        + " web=http://" + running.get(YarnConfiguration.RM_WEBAPP_ADDRESS)
        + " conf=" + confDir);
    System.out.flush();
    Thread.currentThread().join();
  }
}
